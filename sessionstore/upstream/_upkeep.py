"""Upkeep of a pool's connections: which sessions ended, what a pass did, session events,
and what the pool holds (`PoolCensus`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from pydantic import BaseModel, ConfigDict

from .._scripts import Batch
from ..exceptions import BackendUnavailable
from ..store import EventFollower, EventKind, SessionStore
from ._connections import Entry
from ._records import UpstreamState

logger = logging.getLogger("sessionstore.upstream")

#: Session events after which a session's connections must be closed.
ENDING_EVENTS = frozenset({EventKind.EXPIRED, EventKind.DELETED, EventKind.ROTATED})


class MaintenanceReport(BaseModel):
    """What one `UpstreamPool.maintain` pass did.

    .. versionadded:: 0.1
    """

    model_config = ConfigDict(frozen=True)

    #: Connections closed because their session ended.
    ended: int
    #: Idle connections closed because they neared the maximum age.
    aged: int
    #: Idle connections found dead (lost, BYE) and dropped.
    dead: int


class PoolCensus(BaseModel):
    """What one process's pool holds now (no I/O: for metrics and health).

    .. versionadded:: 0.1
    """

    model_config = ConfigDict(frozen=True)

    #: Sockets open in this process.
    open_connections: int
    #: Connections this process tracks, by their record's state as last read or
    #: written here ("unknown" before the first read).
    by_state: dict[str, int]


def census(entries: Iterable[Entry]) -> PoolCensus:
    """Count `entries`: open sockets, and entries by their last known record state."""
    by_state = dict.fromkeys([*(s.value for s in UpstreamState), "unknown"], 0)
    open_connections = 0
    for entry in entries:
        open_connections += entry.connection is not None
        state = entry.recorded_state.value if entry.recorded_state is not None else "unknown"
        by_state[state] += 1
    return PoolCensus(open_connections=open_connections, by_state=by_state)


async def ended_sessions(store: SessionStore, session_ids: Iterable[str]) -> list[str]:
    """The ids among `session_ids` whose session ended or is past a deadline.

    One pipelined round trip (one per node on a cluster): Redis TIME and the
    deadlines of every record, compared here.
    """
    ids = sorted(session_ids)
    if not ids:
        return []
    batch = Batch(store.redis)
    batch.command("TIME")
    for session_id in ids:
        batch.command("HMGET", store.keys.session(session_id).record, "idle_end", "life_end")
    replies = await batch.execute()
    seconds, micros = replies[0]
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    ended = []
    for session_id, deadlines in zip(ids, replies[1:], strict=True):
        if deadlines[0] is None or now_ms >= min(int(deadlines[0]), int(deadlines[1])):
            ended.append(session_id)
    return ended


async def close_idle(
    entries: Iterable[Entry],
    drop: Callable[[Entry], Awaitable[None]],
    *,
    now: float,
    refresh_after: float,
) -> tuple[int, int]:
    """Drop idle connections that are dead or at `refresh_after`; returns (aged, dead).

    Entries in use are skipped: their next checkout makes the same checks.
    """
    aged = dead = 0
    for entry in entries:
        if entry.connection is None or entry.lock.locked():
            continue
        async with entry.lock:
            if entry.connection is not None and not entry.connection.alive:
                dead += 1
                await drop(entry)
            elif (age := entry.age(now)) is not None and age >= refresh_after:
                aged += 1
                await drop(entry)
    return aged, dead


async def close_on_session_end(
    follower: EventFollower,
    session_ended: Callable[[str], Awaitable[int]],
    *,
    running: Callable[[], bool],
    pause: float = 1.0,
) -> None:
    """Call `session_ended(session_id)` for every expired, deleted or rotated session.

    Runs until cancelled or `running()` turns false. While Redis is down it
    logs once per outage, waits `pause` seconds between tries, and continues
    from where it stopped (the follower keeps its cursor).
    """
    down = False
    while running():  # checked after every read (at most `block` apart), not per event
        try:
            events = await follower.read()
        except BackendUnavailable as exc:
            if not running():
                return  # a cancellation the client library reported as a timeout
            if not down:
                logger.warning("session events unavailable, retrying: %s", exc)
            down = True
            await asyncio.sleep(pause)
            continue
        down = False
        for event in events:
            if event.kind in ENDING_EVENTS:
                await session_ended(event.session_id)
