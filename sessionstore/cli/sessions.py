"""``sessionstore sessions ...`` and ``sessionstore health``: inspect and act on sessions.

Human tables by default (rich), ``--json`` for scripts. Exit codes: 0 done,
1 not found or refused, 2 bad usage, 3 Redis unavailable.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from .._health import STORE_CHECKS, HealthSection, HealthSources, verdict
from ..breaker import BreakerAdmin
from ..exceptions import BackendUnavailable
from ..fleet import sweep_lag_limit
from ..store import Session, SessionStatus, SessionStore, Tombstone, list_by_status
from ._support import EXIT_FAILED, fail, load_settings, open_store, print_json, run

app = typer.Typer(help="List, show, expire and delete sessions.", no_args_is_help=True)

_SESSION_COLUMNS = ("id", "status", "user", "last activity", "expires at", "requests", "version")
_TOMB_COLUMNS = ("id", "status", "reason", "ended at", "user", "superseded by")


def _row(item: Session | Tombstone) -> tuple[str, ...]:
    if isinstance(item, Session):
        return (
            item.id,
            item.status.value,
            item.user_id or "",
            f"{item.last_activity:%Y-%m-%d %H:%M:%S}",
            f"{item.expires_at:%Y-%m-%d %H:%M:%S}",
            str(item.active_requests),
            str(item.version),
        )
    return (
        item.id,
        item.status.value,
        item.reason,
        f"{item.ended_at:%Y-%m-%d %H:%M:%S}",
        item.user_id or "",
        item.superseded_by or "",
    )


def _print_items(items: list[Session | Tombstone], as_json: bool) -> None:
    if as_json:
        print_json([item.model_dump(mode="json") for item in items])
        return
    console = Console()
    sessions = [i for i in items if isinstance(i, Session)]
    tombs = [i for i in items if isinstance(i, Tombstone)]
    for title, columns, rows in (
        ("sessions", _SESSION_COLUMNS, sessions),
        ("ended ids (tombstones)", _TOMB_COLUMNS, tombs),
    ):
        if rows:
            table = Table(*columns, title=title)
            for item in rows:
                table.add_row(*_row(item))
            console.print(table)
    if not items:
        console.print("no sessions found")


@app.command("list")
def list_sessions(
    user: str | None = typer.Option(None, "--user", help="Sessions of this user (active only)."),
    status: Annotated[
        SessionStatus | None,
        typer.Option("--status", help="active | expired | closed | rotated (default: active)."),
    ] = None,
    limit: int = typer.Option(100, min=1, max=10_000, help="At most this many."),
    scan_events: int = typer.Option(
        1000, min=1, help="Ended ids: newest events read per shard (a bounded look back)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List sessions by user or by status, without SCAN (see docs/server.md)."""
    settings = load_settings()
    if user is not None and status not in (None, SessionStatus.ACTIVE):
        fail("--user lists active sessions only; drop --status", 2)

    async def body() -> list[Session | Tombstone]:
        async with open_store(settings) as store:
            if user is not None:
                return list(await store.list_for_user(user, limit=limit))
            return await _by_status(store, status or SessionStatus.ACTIVE, limit, scan_events)

    _print_items(run(body), as_json)


async def _by_status(
    store: SessionStore, status: SessionStatus, limit: int, scan_events: int
) -> list[Session | Tombstone]:
    if status is SessionStatus.ACTIVE:
        return await list_by_status(store, status, limit=limit)
    # Ended ids come from a shard-by-shard event scan: show how far it got.
    with Progress(transient=True, console=Console(stderr=True)) as bar:
        task = bar.add_task(f"scanning events for {status.value} ids", total=store.keys.shards)
        return await list_by_status(
            store,
            status,
            limit=limit,
            scan_events=scan_events,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )


@app.command("show")
def show(
    session_id: str = typer.Argument(..., help="The session id."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show one session (or the tombstone of an ended id) and its Redis keys."""
    settings = load_settings()

    async def body() -> tuple[Session | Tombstone, dict[str, str]]:
        async with open_store(settings) as store:
            keys = store.session_keys(session_id)
            found = await store.lookup(session_id, with_successor=True)
            return found, {
                "record": keys.record,
                "tombstone": keys.tombstone,
            }

    found, keys = run(body)
    if as_json:
        print_json({**found.model_dump(mode="json"), "keys": keys})
        return
    table = Table("field", "value", title=f"session {session_id}")
    for name, value in found.model_dump().items():
        table.add_row(name, str(value))
    for name, key in keys.items():
        table.add_row(f"key: {name}", key)
    console = Console()
    console.print(table)
    key = keys["record"] if isinstance(found, Session) else keys["tombstone"]
    console.print(f"read it with: redis-cli HGETALL '{key}'", highlight=False)


def _end(session_id: str, action: str) -> None:
    settings = load_settings()

    async def body() -> bool:
        async with open_store(settings) as store:
            if action == "expire":
                return await store.expire(session_id)
            return await store.delete(session_id)

    if not run(body):
        fail(f"session {session_id} had already ended", EXIT_FAILED)
    typer.echo(f"{action}d {session_id}")


@app.command("expire")
def expire(session_id: str = typer.Argument(..., help="The session id.")) -> None:
    """Expire a session now (it can then be resumed into a new one)."""
    _end(session_id, "expire")


@app.command("delete")
def delete(session_id: str = typer.Argument(..., help="The session id.")) -> None:
    """Close a session (it answers ``closed`` for the retention period)."""
    _end(session_id, "delete")


def _sweep_text(sweep: dict[str, Any] | None) -> str:
    if not sweep:
        return "none yet"
    return f"{sweep.get('expired', 0)} expired at {sweep.get('at')} by {sweep.get('worker')}"


#: The CLI names a breaker that is not closed by these fields only.
_NOT_CLOSED_FIELDS = ("name", "state", "cause", "actor")


def _breakers(section: HealthSection) -> dict[str, Any]:
    """Counts by state and every breaker not closed (the rule of /session-health: an open
    breaker is the fleet shielding itself, so it never makes the store degraded)."""
    if not section.ok:
        raise BackendUnavailable(section.data["problem"])
    not_closed = [{k: item[k] for k in _NOT_CLOSED_FIELDS} for item in section.data["not_closed"]]
    return {**section.data, "not_closed": not_closed}


def _breakers_text(value: dict[str, Any]) -> str:
    counts = ", ".join(f"{n} {state}" for state, n in value["by_state"].items() if n)
    lines = [f"{value['known']} known" + (f": {counts}" if counts else "")]
    for item in value["not_closed"]:
        why = f" ({item['cause']}{' by ' + item['actor'] if item['actor'] else ''})"
        lines.append(f"{item['name']} {item['state']}{why if item['cause'] else ''}")
    return "\n".join(lines)


def _upstreams_text(value: dict[str, Any]) -> str:
    attempts = value["reconnect_attempts"]
    return (
        f"{value['registered']} registered, {value['removed']} removed; reconnect attempts: "
        f"{attempts['failed']} failed, {attempts['succeeded']} succeeded"
    )


def _cell(name: str, value: Any) -> str:
    formats = {"last_sweep": _sweep_text, "breakers": _breakers_text, "upstreams": _upstreams_text}
    return formats[name](value) if name in formats else str(value)


def health(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Redis latency, session counts, sweeper lag, workers, breakers and upstream counters;
    exit 1 when degraded, 3 when Redis is unreachable."""
    settings = load_settings()

    async def body() -> dict[str, Any]:
        async with open_store(settings) as store:
            admin = BreakerAdmin(
                store.redis, settings.breaker, key_prefix=settings.session.key_prefix
            )
            sources = HealthSources(
                store=store,
                breakers=admin,
                max_sweeper_lag=sweep_lag_limit(
                    settings.worker.active_sweep_interval,
                    settings.server.health_max_sweeper_lag,
                ),
                worker_dead_after=settings.worker.worker_dead_after,
            )
            # One after the other: a Redis lost midway exits 3, as the first PING would.
            redis, sessions, workers, breakers, upstreams = [
                await check(sources) for check in STORE_CHECKS
            ]
        if not redis.ok:
            raise BackendUnavailable(redis.data["error"])
        if not upstreams.ok:
            raise BackendUnavailable(upstreams.data["problem"])
        problem = workers.data.get("problem")
        return {
            "status": verdict([sessions, workers])[0],
            "redis_latency_ms": redis.data["latency_ms"],
            "total": sessions.data["total"],
            "active": sessions.data["active"],
            "expired": sessions.data["expired"],
            "sweeper_lag_seconds": sessions.data["sweeper_lag_seconds"],
            "lifetime": sessions.data["lifetime"],
            "live_workers": workers.data["live_ids"],
            "dead_workers": workers.data["dead_ids"],
            "last_sweep": workers.data["last_sweep"],
            "breakers": _breakers(breakers),
            "upstreams": upstreams.data["fleet"],
            **({"problem": problem} if problem else {}),
            "at": sessions.data["at"],
        }

    report = run(body)
    if as_json:
        print_json(report)
    else:
        table = Table("figure", "value", title="session store health")
        for name, value in report.items():
            table.add_row(name, _cell(name, value))
        Console().print(table)
    if report["status"] != "healthy":
        raise typer.Exit(EXIT_FAILED)
