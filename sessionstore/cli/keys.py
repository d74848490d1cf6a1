"""``sessionstore keys``: print the Redis key layout for operators."""

from __future__ import annotations

import json

import typer

from .._environment import Settings
from .._keys import KeySpace, describe_layout
from ..exceptions import InvalidInput
from ._support import fail


def print_layout(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    user: str | None = typer.Option(
        None, "--user", help="Print only the redis-cli lines that read this user's index entry."
    ),
) -> None:
    """Print every key the store writes: pattern, type, TTL and a redis-cli line."""
    settings = Settings()
    if user is not None:
        keys = KeySpace(settings.session.key_prefix, settings.session.shards)
        try:
            key, own = keys.user_index_keys(user)
        except InvalidInput as error:
            fail(str(error), 2)
        typer.echo(f"HGET '{key}' '{user}'")
        typer.echo(f"ZRANGE '{own}' 0 -1    # when the HGET answers *")
        return
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
