"""Code that runs in child processes of the multi-process tests (spawned, so
each child has its own interpreter, event loop and connection pool)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from multiprocessing.synchronize import Event
from typing import TypeVar

from sessionstore import (
    LimitExceeded,
    RedisSettings,
    SessionGone,
    SessionSettings,
    SessionStore,
    create_client,
)

T = TypeVar("T")


def _run(url: str, settings: SessionSettings, body: Callable[[SessionStore], Awaitable[T]]) -> T:
    async def main() -> T:
        client = create_client(RedisSettings.from_dsn(url))
        try:
            return await body(SessionStore(client, settings))
        finally:
            await client.aclose()

    return asyncio.run(main())


def increment(url: str, settings: SessionSettings, session_id: str, times: int) -> int:
    """`times` read-modify-write increments of state["counter"] through mutate (CAS)."""

    async def body(store: SessionStore) -> int:
        for _ in range(times):
            await store.mutate(session_id, lambda s: {**s, "counter": s.get("counter", 0) + 1})
        return times

    return _run(url, settings, body)


def write_until_gone(url: str, settings: SessionSettings, session_id: str, name: str) -> str:
    """Write state as fast as possible until the session is gone; return the error's status."""

    async def body(store: SessionStore) -> str:
        n = 0
        while True:
            try:
                await store.set_state(session_id, {name: n})
                await store.touch(session_id)
            except SessionGone as exc:
                return exc.status
            n += 1

    return _run(url, settings, body)


def create_many(url: str, settings: SessionSettings, count: int) -> list[str]:
    """Create `count` sessions, 64 at a time; return their ids."""

    async def body(store: SessionStore) -> list[str]:
        ids: list[str] = []
        while len(ids) < count:
            batch = min(64, count - len(ids))
            made = await asyncio.gather(*(store.create() for _ in range(batch)))
            ids += [s.id for s in made]
        return ids

    return _run(url, settings, body)


def hold_a_request(
    url: str, settings: SessionSettings, session_id: str, release: Event, took: Event
) -> bool:
    """Try to take a request lease; hold it until `release` is set. True if taken."""

    async def body(store: SessionStore) -> bool:
        try:
            async with store.track_request(session_id):
                took.set()
                # A multiprocessing Event has no async wait: block a thread on it.
                await asyncio.to_thread(release.wait)
                return True
        except LimitExceeded:
            took.set()
            return False

    return _run(url, settings, body)
