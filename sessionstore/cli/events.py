"""``sessionstore events tail``: print session events as they happen."""

from __future__ import annotations

import asyncio
import json
import signal

import typer

from .._environment import Settings
from .._redis import create_client
from ..store import Event, EventConsumer, EventFollower
from ._support import load_settings, run, store_url

app = typer.Typer(help="Session events (created, expired, deleted, rotated, resumed).")


def human_line(event: Event) -> str:
    """One event as a line: time, kind, session id, other fields, event id."""
    at = event.at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    extra = " ".join(f"{k}={v}" for k, v in sorted(event.fields.items()) if v)
    return f"{at}  {event.kind:<8} {event.session_id}  {extra}  [{event.id}]".rstrip()


async def _tail(
    settings: Settings,
    url: str,
    *,
    start: str,
    limit: int | None,
    group: str | None,
    consumer: str,
    as_json: bool,
) -> None:
    client = create_client(settings.store_redis(url))
    session = settings.session
    reader: EventFollower | EventConsumer
    if group:
        reader = EventConsumer(client, session, group=group, consumer=consumer, start=start)
    else:
        reader = EventFollower(client, session, after=start)
    printed = 0
    # Ctrl-C sets a flag checked between reads (each returns within the follower's
    # block time) rather than cancelling a Redis call: on Python 3.11 a cancellation
    # that lands inside redis-py's zero-length read timeout can be swallowed, and the
    # command would then follow on forever.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        while not stop.is_set():
            for event in await reader.read():
                line = json.dumps(event.model_dump(mode="json")) if as_json else human_line(event)
                typer.echo(line)
                if isinstance(reader, EventConsumer):
                    await reader.ack(event)
                printed += 1
                if limit is not None and printed >= limit:
                    return
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        loop.remove_signal_handler(signal.SIGTERM)
        await client.aclose()


@app.command("tail")
def tail(
    start: str = typer.Option(
        "$", "--from", help='"$" (new events), "0" (all kept), or an event id to follow on from.'
    ),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Stop after this many events."),
    group: str | None = typer.Option(
        None, "--group", help="Read through this consumer group (events are acknowledged)."
    ),
    consumer: str = typer.Option("cli", "--consumer", help="Consumer name within --group."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
) -> None:
    """Follow the events of every shard until interrupted (or --limit events)."""
    settings = load_settings()
    url = store_url(settings)
    try:
        run(
            lambda: _tail(
                settings,
                url,
                start=start,
                limit=limit,
                group=group,
                consumer=consumer,
                as_json=as_json,
            )
        )
    except KeyboardInterrupt:
        return
