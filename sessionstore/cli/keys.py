"""``sessionstore keys``: print the Redis key layout for operators."""

from __future__ import annotations

import json

import typer

from .._environment import Settings
from .._keys import describe_layout


def print_layout(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Print every key the store writes: pattern, type, TTL and a redis-cli line."""
    settings = Settings()
    rows = describe_layout(settings.session.key_prefix)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("key", "type", "ttl / bound", "what", "read it with")
    for row in rows:
        table.add_row(row["pattern"], row["type"], row["ttl"], row["what"], row["redis_cli"])
    Console().print(table)
