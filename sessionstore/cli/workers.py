"""``sessionstore workers``: the fleet's workers by their heartbeats, dead ones flagged."""

from __future__ import annotations

import json

import typer

from .._environment import Settings
from .._keys import KeySpace
from .._redis import create_client
from ..fleet import WorkerInfo, WorkerState, list_workers
from ._support import load_settings, run, store_url


async def _read(settings: Settings) -> list[WorkerInfo]:
    dead_after = settings.worker.worker_dead_after
    client = create_client(settings.store_redis(store_url(settings)))
    try:
        keys = KeySpace(settings.session.key_prefix, settings.session.shards)
        return await list_workers(client, keys, dead_after=dead_after)
    finally:
        await client.aclose()


def _sweep_text(worker: WorkerInfo) -> str:
    sweep = worker.reports.get("sweep")
    if not isinstance(sweep, dict):
        return "-"
    return f"{sweep.get('expired', 0)} expired, {sweep.get('still_due', 0)} due ({sweep.get('at')})"


def list_fleet(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    check: str | None = typer.Option(
        None,
        "--check",
        metavar="WORKER_ID",
        help="Only say whether this worker is live: exit 0 if so, 1 if not (health checks).",
    ),
) -> None:
    """List workers that beat within the heartbeat TTL; those silent too long are dead."""
    settings = load_settings()
    store_url(settings)  # exit 2 before any I/O when it is missing
    workers = run(lambda: _read(settings))
    if check is not None:
        state = next((w.state.value for w in workers if w.id == check), "unknown")
        typer.echo(f"{check}: {state}")
        raise typer.Exit(0 if state == WorkerState.LIVE else 1)
    if as_json:
        typer.echo(json.dumps([w.model_dump(mode="json") for w in workers], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("worker", "state", "host", "pid", "started", "last beat", "jobs", "last sweep")
    styles = {WorkerState.LIVE: "green", WorkerState.DEAD: "bold red", WorkerState.STOPPED: "dim"}
    for w in workers:
        table.add_row(
            w.id,
            f"[{styles[w.state]}]{w.state.value}[/]",
            w.host or "-",
            str(w.pid or "-"),
            f"{w.started_at:%Y-%m-%d %H:%M:%S}" if w.started_at else "-",
            f"{w.silent_for.total_seconds():.1f}s ago",
            str(w.jobs_run),
            _sweep_text(w),
        )
    Console().print(table if workers else "no workers have beaten within the heartbeat TTL")
