"""Reading a request body whole, within a deadline and a size, before the app runs.

A client that trickles its body must not hold what the app takes when it
starts handling a request: `SessionMiddleware` reads the body this way before
it takes the session's request lease, and `BodyLimits` does it for every
request of an app (the reference server puts it outermost). A body that is
not in by the deadline answers 408, a larger one 413, both with
``Connection: close`` (the rest of the body is never read).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._problems import Problem

#: The default deadline for a whole request body, in seconds.
DEFAULT_BODY_TIMEOUT = 30.0
#: The default largest body read before the app runs.
DEFAULT_MAX_BODY_BYTES = 2 * 1024 * 1024


@dataclass(frozen=True)
class BodyReadLimits:
    """How long a whole request body may take to arrive, and how large it may be.

    .. versionadded:: 0.1
    """

    #: Seconds from the first read to the body's last byte.
    timeout: float = DEFAULT_BODY_TIMEOUT
    max_bytes: int = DEFAULT_MAX_BODY_BYTES

    def __post_init__(self) -> None:
        if not self.timeout > 0 or self.max_bytes < 1:
            raise ValueError("body read limits: timeout and max_bytes must be positive")


#: What `SessionMiddleware` reads before it takes a lease, unless told otherwise.
DEFAULT_BODY_LIMITS = BodyReadLimits()


def _declared_size(scope: Scope) -> int | None:
    """The body's size as the headers declare it: 0 for none, None when not declared
    (chunked) or unreadable (then the bytes are counted as they come)."""
    for key, value in scope.get("headers", ()):
        if key == b"transfer-encoding":
            return None
        if key == b"content-length":
            text = value.strip()
            return int(text) if text.isdigit() and len(text) < 20 else None
    return 0


def _timed_out(limits: BodyReadLimits) -> Problem:
    return Problem(
        408,
        "request_timeout",
        f"the request body did not arrive within {limits.timeout:g} s",
        headers={"Connection": "close"},
    )


def _too_large(limits: BodyReadLimits) -> Problem:
    return Problem(
        413,
        "payload_too_large",
        f"the request body is over {limits.max_bytes} bytes",
        extra={"limit": limits.max_bytes},
        headers={"Connection": "close"},
    )


async def read_body(
    scope: Scope, receive: Receive, limits: BodyReadLimits
) -> tuple[Receive, Problem | None]:
    """Read the request's body whole; returns a `receive` that replays it, or a refusal.

    The replaying `receive` hands out the body's messages, then defers to the
    original one (so ``http.disconnect`` still arrives). A client that went
    away while sending gets no answer (nobody would read it).
    """
    declared = _declared_size(scope) if scope["type"] == "http" else 0
    if declared == 0:
        return receive, None
    if declared is not None and declared > limits.max_bytes:
        return receive, _too_large(limits)  # refused before a byte of it is read
    messages: list[Message] = []
    size = 0
    try:
        async with asyncio.timeout(limits.timeout):
            while True:
                message = await receive()
                messages.append(message)
                if message["type"] != "http.request":
                    break  # a disconnect: replayed to the app as it came
                size += len(message.get("body", b""))
                if size > limits.max_bytes:
                    return receive, _too_large(limits)
                if not message.get("more_body", False):
                    break
    except TimeoutError:
        return receive, _timed_out(limits)
    return _replay(iter(messages), receive), None


def _replay(messages: Iterator[Message], receive: Receive) -> Receive:
    async def replayed() -> Message:
        for message in messages:
            return message
        return await receive()

    return replayed


class BodyReads:
    """How many request bodies a `BodyLimits` is reading now (for a gauge).

    .. versionadded:: 0.1
    """

    def __init__(self) -> None:
        self.current = 0

    def __len__(self) -> int:
        return self.current


class BodyLimits:
    """ASGI middleware: read each request body whole (408 late, 413 large) before the app.

    Args:
        app: the ASGI app to wrap.
        limits: the deadline and size of a body.
        reads: counts the bodies being read (share it to read the figure).

    .. versionadded:: 0.1
    """

    def __init__(
        self, app: ASGIApp, *, limits: BodyReadLimits | None = None, reads: BodyReads | None = None
    ) -> None:
        self.app = app
        self.limits = limits or BodyReadLimits()
        self.reads = reads if reads is not None else BodyReads()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.reads.current += 1
        try:
            replayed, problem = await read_body(scope, receive, self.limits)
        finally:
            self.reads.current -= 1
        if problem is not None:
            await problem.response()(scope, receive, send)
            return
        await self.app(scope, replayed, send)
