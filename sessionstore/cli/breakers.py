"""``sessionstore breakers``: list, show and steer the fleet's circuit breakers.

``open`` isolates an upstream across the fleet, ``close`` holds its breaker
closed, ``reset`` hands it back to automatic judgement; each is recorded with
who (``--actor``, default ``cli:<user>@<host>``), when (Redis time) and why
(``--reason``). Exit codes as in `sessionstore.cli`: 0 done, 1 not found,
2 bad usage, 3 Redis unavailable.
"""

from __future__ import annotations

import getpass
import json
import socket
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import typer

from .._redis import create_client
from ..breaker import BreakerAdmin, BreakerSnapshot, BreakerStatus
from ..exceptions import SessionStoreError
from ._support import load_settings, run, store_url

T = TypeVar("T")

app = typer.Typer(
    help="Inspect and steer the fleet's circuit breakers (state shared in Redis).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

JSON_OPTION = typer.Option(False, "--json", help="Print JSON instead of a table.")
ACTOR_OPTION = typer.Option(None, "--actor", help="Who acts (default: cli:<user>@<host>).")


class NotFound(SessionStoreError):
    """The breaker is unknown to Redis (exit 1)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no breaker named {name}")


def _default_actor() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"cli:{user}@{socket.gethostname()}"[:128]


def _with_admin(body: Callable[[BreakerAdmin], Awaitable[T]]) -> T:
    """Run `body` with an admin on the configured Redis; map failures to exit codes."""
    settings = load_settings()
    url = store_url(settings)

    async def with_admin() -> T:
        breaker_settings = settings.breaker
        client = create_client(settings.store_redis(url))
        try:
            return await body(
                BreakerAdmin(client, breaker_settings, key_prefix=settings.session.key_prefix)
            )
        finally:
            await client.aclose()

    return run(with_admin)


def _when(ms: int) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="seconds")


def _state_text(status: BreakerSnapshot) -> str:
    if status.state == "open" and status.now_ms >= status.open_until_ms:
        return "open (half-open on next call)"
    return str(status.state)


def _status_row(status: BreakerStatus) -> dict[str, Any]:
    return {
        **status.model_dump(mode="json"),
        "failure_rate": status.failure_rate,
        "slow_rate": status.slow_rate,
    }


def _print_table(columns: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(*columns)
    for row in rows:
        table.add_row(*row)
    Console().print(table)


@app.command("list")
def list_breakers(as_json: bool = JSON_OPTION) -> None:
    """List every breaker used within the retention period."""
    statuses = _with_admin(lambda admin: admin.statuses())
    if as_json:
        typer.echo(json.dumps([_status_row(s) for s in statuses], indent=2))
        return
    rows = [
        [
            s.name,
            _state_text(s),
            f"{s.failures}/{s.calls}",
            str(s.slow),
            str(s.probes_in_flight),
            _when(s.changed_at_ms),
            s.cause or "-",
            s.actor or "-",
        ]
        for s in statuses
    ]
    columns = ["breaker", "state", "failed/calls", "slow", "probes", "changed", "cause", "by"]
    _print_table(columns, rows)


@app.command("show")
def show(
    name: str,
    as_json: bool = JSON_OPTION,
    count: int = typer.Option(10, "--events", min=0, max=1000, help="Events and audit to show."),
) -> None:
    """Show one breaker: state, window, probes, recent transitions and manual actions."""

    async def body(admin: BreakerAdmin) -> tuple[BreakerStatus, list[Any], list[Any]]:
        status = await admin.status(name)
        if not status.known and name not in {n for n, _ in await admin.names()}:
            raise NotFound(name)
        return status, await admin.history(name, count), await admin.audit(name, count)

    status, events, audit = _with_admin(body)
    if as_json:
        document = {
            "status": _status_row(status),
            "events": [e.model_dump(mode="json") for e in events],
            "audit": [a.model_dump(mode="json") for a in audit],
        }
        typer.echo(json.dumps(document, indent=2))
        return
    fields = [
        ("state", _state_text(status)),
        ("generation", str(status.gen)),
        ("window", f"{status.calls} calls, {status.failures} failed, {status.slow} slow"),
        ("probes in flight", f"{status.probes_in_flight} ({status.successes} succeeded)"),
        ("changed", _when(status.changed_at_ms)),
        ("open until", _when(status.open_until_ms)),
        ("cause", status.cause or "-"),
        ("by", status.actor or "-"),
        ("reason", status.reason or "-"),
        ("trips", str(status.trips)),
    ]
    _print_table([status.name, ""], [list(f) for f in fields])
    event_rows = [
        [
            e.at.isoformat(timespec="seconds"),
            e.kind,
            " ".join(f"{k}={v}" for k, v in e.fields.items()),
        ]
        for e in events
    ]
    _print_table(["when", "event", "details"], event_rows)
    audit_rows = [
        [
            a.at.isoformat(timespec="seconds"),
            a.action,
            a.actor,
            a.reason,
            f"{a.from_state} -> {a.to_state}",
        ]
        for a in audit
    ]
    _print_table(["when", "action", "by", "reason", "change"], audit_rows)


def _act(name: str, action: str, reason: str, actor: str | None, as_json: bool) -> None:
    who = actor if actor is not None else _default_actor()

    async def body(admin: BreakerAdmin) -> BreakerSnapshot:
        if action == "open":
            return await admin.force_open(name, actor=who, reason=reason)
        if action == "close":
            return await admin.force_closed(name, actor=who, reason=reason)
        return await admin.reset(name, actor=who, reason=reason)

    snapshot = _with_admin(body)
    if as_json:
        typer.echo(json.dumps(snapshot.model_dump(mode="json"), indent=2))
        return
    typer.echo(f"{name}: {snapshot.state} (generation {snapshot.gen}, by {who})")


@app.command("open")
def force_open(
    name: str,
    reason: str = typer.Option(..., "--reason", help="Why (kept in the audit stream)."),
    actor: str | None = ACTOR_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Isolate an upstream: every replica refuses its calls until reset or close."""
    _act(name, "open", reason, actor, as_json)


@app.command("close")
def force_close(
    name: str,
    reason: str = typer.Option(..., "--reason", help="Why (kept in the audit stream)."),
    actor: str | None = ACTOR_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Hold the breaker closed: calls pass and failures are not counted until reset."""
    _act(name, "close", reason, actor, as_json)


@app.command("reset")
def reset(
    name: str,
    reason: str = typer.Option("", "--reason", help="Why (kept in the audit stream)."),
    actor: str | None = ACTOR_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Hand the breaker back to automatic judgement: closed, with an empty window."""
    _act(name, "reset", reason, actor, as_json)
