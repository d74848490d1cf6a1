"""``sessionstore upstreams``: inspect a session's upstream connection records; make keys.

    sessionstore upstreams show SESSION_ID [--json]
    sessionstore upstreams new-key

Exit codes: 0 done, 1 no such session or no records, 2 bad usage, 3 Redis unavailable.
"""

from __future__ import annotations

import json

import typer

from .._environment import Settings
from ..upstream import SecretBox, UpstreamRecord, UpstreamRecords
from ._support import fail, load_settings, open_store, run

app = typer.Typer(help="Upstream connection records (IMAP...) of sessions.", no_args_is_help=True)


@app.command("show")
def show(
    session_id: str = typer.Argument(..., help="The session whose upstreams to show."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Print the session's upstream records: state, attempts, errors, next attempt."""
    settings = load_settings()
    records = run(lambda: _records(settings, session_id))
    if not records:
        fail(f"session {session_id} has no upstream records")
    if as_json:
        rows = {name: r.model_dump(mode="json") for name, r in records.items()}
        typer.echo(json.dumps(rows, indent=2))
        return
    _table(records)


async def _records(settings: Settings, session_id: str) -> dict[str, UpstreamRecord]:
    async with open_store(settings) as store:
        records = await UpstreamRecords(store).list(session_id)
        if not records:
            await store.get(session_id)  # says why: ended or never issued
        return records


def _table(records: dict[str, UpstreamRecord]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("upstream", "address", "state", "attempts", "last success", "last error",
                  "next attempt", "response ms")  # fmt: skip
    for name, r in sorted(records.items()):
        table.add_row(
            name,
            r.spec.address,
            r.state.value,
            str(r.attempts),
            r.last_success.isoformat() if r.last_success else "-",
            r.last_error or "-",
            r.next_attempt_at.isoformat() if r.next_attempt_at else "-",
            "-" if r.response_time_ms is None else f"{r.response_time_ms:.1f}",
        )
    Console().print(table)


@app.command("new-key")
def new_key() -> None:
    """Print a new Fernet key for SESSIONSTORE_SECRET_KEY (put it first to rotate)."""
    typer.echo(SecretBox.generate_key())
