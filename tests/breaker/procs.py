"""Code that runs in child processes of the breaker fleet tests (spawned: each child has
its own interpreter, event loop, connections and local breaker views)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from multiprocessing.synchronize import Event
from typing import Any, TypeVar

from sessionstore import BreakerOpen, BreakerSettings, RedisSettings, create_client
from sessionstore.breaker import Attempt, BreakerRegistry, BreakerState
from tests.polling import eventually

T = TypeVar("T")


class UpstreamDown(Exception):
    """The failure the children report to their breaker."""


def _run(
    url: str,
    prefix: str,
    settings: BreakerSettings,
    body: Callable[[BreakerRegistry], Awaitable[T]],
    *,
    push: bool = True,
) -> T:
    async def main() -> T:
        client = create_client(RedisSettings.from_dsn(url))
        try:
            async with BreakerRegistry(client, settings, key_prefix=prefix, push=push) as reg:
                return await body(reg)
        finally:
            await client.aclose()

    return asyncio.run(main())


def fail_calls(
    url: str, prefix: str, settings: BreakerSettings, name: str, calls: int, start: Any
) -> dict[str, int]:
    """Once every child is at the `start` barrier, make `calls` guarded calls that fail;
    count the admitted and the refused ones."""

    async def body(registry: BreakerRegistry) -> dict[str, int]:
        breaker = await registry.get(name)
        await asyncio.to_thread(start.wait)
        admitted = refused = 0
        for _ in range(calls):
            try:
                async with breaker.guard():
                    admitted += 1
                    raise UpstreamDown
            except UpstreamDown:
                pass
            except BreakerOpen:
                refused += 1
        return {"admitted": admitted, "refused": refused}

    return _run(url, prefix, settings, body)


def race_for_probes(
    url: str, prefix: str, settings: BreakerSettings, name: str, tries: int, go: Event
) -> int:
    """After `go`, ask for `tries` permissions at once; hold the probes granted (never
    finished: the leases stay until their deadline); return how many were probes."""

    async def body(registry: BreakerRegistry) -> int:
        breaker = await registry.get(name)
        await asyncio.to_thread(go.wait)
        results = await asyncio.gather(
            *(breaker.acquire() for _ in range(tries)), return_exceptions=True
        )
        probes = [r for r in results if isinstance(r, Attempt) and r.is_probe]
        for r in results:
            if not isinstance(r, Attempt | BreakerOpen):
                raise r
        return len(probes)

    return _run(url, prefix, settings, body)


def hold_a_probe(
    url: str, prefix: str, settings: BreakerSettings, name: str, holding: Event
) -> None:
    """Take a probe lease (retrying until the open period is over), say so, then hang
    until killed."""

    async def body(registry: BreakerRegistry) -> None:
        breaker = await registry.get(name)
        while True:
            try:
                attempt = await breaker.acquire()
            except BreakerOpen as exc:
                await asyncio.sleep(min(exc.retry_after, 0.05))
                continue
            if attempt.is_probe:
                break
            await attempt.cancel()
        holding.set()
        await asyncio.to_thread(threading.Event().wait)  # until SIGKILL

    _run(url, prefix, settings, body)


def observe(
    url: str,
    prefix: str,
    settings: BreakerSettings,
    name: str,
    target: str,
    deadline: float,
    ready: Event,
    push: bool,
) -> float | None:
    """Watch `name` until its local state is `target`; return the monotonic time the
    change was applied (CLOCK_MONOTONIC is shared by processes on one host), or None
    if it was not seen within `deadline` seconds of being ready."""

    async def body(registry: BreakerRegistry) -> float | None:
        breaker = await registry.get(name)
        seen: list[float] = []
        changed = asyncio.Event()

        def note(_: str, old: object, new: object) -> None:
            if getattr(new, "state", None) == BreakerState(target):
                seen.append(time.monotonic())
                changed.set()

        registry.on_transition(note)
        if push:  # subscribed (and caught up) before saying ready

            async def live() -> bool:
                return registry.health().push_live

            await eventually(live, timeout=30)
        assert breaker.state is not BreakerState(target)
        ready.set()
        try:
            await asyncio.wait_for(changed.wait(), deadline)
        except TimeoutError:
            return None
        return seen[0]

    return _run(url, prefix, settings, body, push=push)
