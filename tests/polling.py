"""Polling with a deadline: the tests' only way to wait for something to happen."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    check: Callable[[], Awaitable[T]], *, timeout: float = 10.0, interval: float = 0.01
) -> T:
    """Call `check` until it returns a truthy value; fail after `timeout` seconds.

    Exceptions from `check` count as "not yet" until the deadline, then re-raise.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = await check()
            if result:
                return result
            error: BaseException | None = None
        except AssertionError as exc:
            error = exc
        if time.monotonic() >= deadline:
            if error is not None:
                raise error
            raise AssertionError(f"condition still false after {timeout}s")
        await asyncio.sleep(interval)


async def until_raises(
    call: Callable[[], Awaitable[object]], error: type[BaseException], *, timeout: float = 10.0
) -> None:
    """Call `call` until it raises `error` (e.g. a session past its deadline answering
    expired); fail after `timeout` seconds."""

    async def raised() -> bool:
        try:
            await call()
        except error:
            return True
        return False

    await eventually(raised, timeout=timeout)
