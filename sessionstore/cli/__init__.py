"""The ``sessionstore`` command.

Each command family lives in its own module and registers itself on `app`
here. Commands build `Settings` from the environment once, at the edge, and
pass the pieces down. Exit codes: 0 success, 1 operation failed (not found,
refused), 2 bad usage, 3 Redis unavailable.
"""

from __future__ import annotations

import typer

from . import breakers, events, keys, serve, sessions, upstreams, worker, workers
from .dev import command as dev
from .dev import demo

app = typer.Typer(
    name="sessionstore",
    help="Redis-backed distributed session store: serve, run workers, inspect.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("keys")(keys.print_layout)
app.command("demo")(demo.run_demo)
app.add_typer(upstreams.app, name="upstreams")
app.command("worker")(worker.start_worker)
app.command("workers")(workers.list_fleet)
app.add_typer(events.app, name="events")
app.command("serve")(serve.serve)
app.command("dev")(dev.dev)
app.add_typer(sessions.app, name="sessions")
app.command("health")(sessions.health)
app.add_typer(breakers.app, name="breakers")


@app.callback()
def _root() -> None:
    """Redis-backed distributed session store: serve, run workers, inspect."""


def main() -> None:
    """Entry point of the ``sessionstore`` console script."""
    app()
