"""One Redis connection that many tasks send commands on at once, replies in order.

The store's hot path (script calls and the read's plain commands, none of
which blocks) goes through one `MultiplexedConnection` per standalone or
Sentinel client instead of redis-py's pool and pipeline: a call packs its
commands with hiredis (C), writes them in one write, and waits for its
replies, which one reader task takes off the socket in the order the
commands went out. Redis answers the commands of one connection in order, so
the n-th reply belongs to the n-th command written. Concurrent calls share
the socket: at 32 at a time one read often brings back many calls' replies.

Why not redis-py's pipeline: per call it takes a pooled connection (a lock,
a timeout and a zero-timeout read to see that the connection is clean),
packs every argument in Python, and arms a timeout for every reply; that
costs more than the round trip itself (docs/development.md). The
connection is a redis-py connection made by the client's own pool class and
settings (address, AUTH, TLS, database, Sentinel master lookup); only the
sending and the reading of replies are done here.

Timeouts: connecting (handshake included) is bounded by the connect and
socket timeouts; while replies are awaited, a socket timeout without any
reply fails every waiting call with ``redis.exceptions.TimeoutError`` and
drops the connection, and the next call connects again. A caller that gives
up (a cancelled task, a request budget) leaves its replies to be read and
dropped, so the replies of the others stay in step.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import hiredis
import redis.exceptions as rex
from redis.asyncio.connection import AbstractConnection, ConnectionPool

#: A command and its arguments, as given to ``execute_command``.
Command = Sequence[Any]
#: A reply callback of redis-py (``client.response_callbacks``).
Callback = Callable[..., Any]


@dataclass(slots=True)
class _Call:
    """The commands one caller wrote and the future its replies go to."""

    future: asyncio.Future[list[Any]]
    callbacks: list[Callback | None]


@dataclass(slots=True, eq=False)
class _Link:
    """One connection and the calls waiting for replies on it."""

    connection: AbstractConnection
    waiting: deque[_Call] = field(default_factory=deque)
    reader: asyncio.Task[None] | None = None
    dropped: bool = False


def pack(commands: Sequence[Command]) -> bytes:
    """The commands in the Redis protocol, as one byte string (hiredis packs in C)."""
    return b"".join([hiredis.pack_command(tuple(command)) for command in commands])


class MultiplexedConnection:
    """A connection to one Redis shared by every caller of one client.

    Args:
        pool: the client's connection pool; its connection class and settings
            make the connection (it is not taken from the pool, so the pool's
            own connections stay free for everything else).
        callbacks: the client's reply callbacks (``client.response_callbacks``),
            applied as redis-py applies them, so replies look the same.

    .. versionadded:: 0.1
    """

    def __init__(self, pool: ConnectionPool, callbacks: Mapping[str | bytes, Any]) -> None:
        self._pool = pool
        self._callbacks = callbacks
        settings = pool.connection_kwargs
        self._timeout: float | None = settings.get("socket_timeout")
        connect = settings.get("socket_connect_timeout")
        self._connect_timeout = (connect or 0) + (self._timeout or 0) or None
        self._link: _Link | None = None
        self._connecting = asyncio.Lock()
        self._callback_cache: dict[str, Callback | None] = {}

    async def execute(self, commands: Sequence[Command]) -> list[Any]:
        """The replies to `commands`, written together: one round trip.

        An error reply is returned in its place as an exception instance (a
        ``ResponseError``), as redis-py's pipeline returns it with
        ``raise_on_error=False``.

        Raises:
            redis.exceptions.ConnectionError / TimeoutError: Redis could not be
                reached, or did not answer within the socket timeout.
        """
        packed = pack(commands)
        call = _Call(
            asyncio.get_running_loop().create_future(),
            [self._callback(command[0]) for command in commands],
        )
        link = self._link
        if link is None or not self._usable(link):
            link = await self._connect()
        # Nothing awaits between queueing and writing, so the calls' writes are in
        # the order of the queue: the order the replies come back in.
        link.waiting.append(call)
        try:
            await link.connection.send_packed_command(packed, check_health=False)
        except BaseException as exc:
            await self._drop(link, exc)
            raise
        if link.reader is None or link.reader.done():
            link.reader = asyncio.get_running_loop().create_task(self._read(link))
        return await call.future

    def _callback(self, name: str) -> Callback | None:
        try:
            return self._callback_cache[name]
        except KeyError:
            found = self._callback_cache[name] = self._callbacks.get(name)
            return found

    @staticmethod
    def _usable(link: _Link) -> bool:
        """Connected, the server has not closed it, and (when the client wants health
        checks) it has not sat idle longer than the health-check interval."""
        connection = link.connection
        reader = connection._reader
        if link.dropped or reader is None or connection._writer is None or reader.at_eof():
            return False
        interval = connection.health_check_interval
        return not (
            interval
            and not link.waiting
            and asyncio.get_running_loop().time() > connection.next_health_check
        )

    async def _connect(self) -> _Link:
        async with self._connecting:
            current = self._link
            if current is not None and self._usable(current):
                return current
            if current is not None and not current.waiting:
                await self._drop(current, rex.ConnectionError("stale connection"))
            settings = {**self._pool.connection_kwargs, "socket_timeout": None}
            connection = self._pool.connection_class(**settings)
            try:
                async with asyncio.timeout(self._connect_timeout):
                    await connection.connect()
            except TimeoutError as exc:
                await connection.disconnect(nowait=True)
                raise rex.TimeoutError("Timeout connecting to Redis") from exc
            except BaseException:
                await connection.disconnect(nowait=True)
                raise
            link = self._link = _Link(connection)
            return link

    async def _read(self, link: _Link) -> None:
        """Take replies off the socket and hand them to the calls, in order, until no
        call waits; a socket timeout without a reply drops the connection."""
        waiting, connection = link.waiting, link.connection
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(None) as deadline:
                while waiting:
                    call = waiting[0]
                    if self._timeout is not None:
                        deadline.reschedule(loop.time() + self._timeout)
                    replies: list[Any] = []
                    for callback in call.callbacks:
                        try:
                            reply = await connection.read_response()
                        except rex.ResponseError as error:
                            replies.append(error)
                            continue
                        replies.append(reply if callback is None else callback(reply))
                    waiting.popleft()
                    if not call.future.done():
                        call.future.set_result(replies)
        except TimeoutError:
            await self._drop(link, rex.TimeoutError("Timeout reading from Redis"))
        except asyncio.CancelledError:
            await self._drop(link, rex.ConnectionError("Redis client closed"))
            raise
        except Exception as exc:  # a connection error, or a reply hiredis could not parse
            await self._drop(link, exc)

    async def _drop(self, link: _Link, exc: BaseException) -> None:
        """Fail every call waiting on `link` and close it (the next call connects
        again): after a failed read or write nobody knows which reply is whose."""
        if self._link is link:
            self._link = None
        if link.dropped:
            return
        link.dropped = True
        for call in link.waiting:
            if not call.future.done():
                call.future.set_exception(_fresh(exc))
        link.waiting.clear()
        await link.connection.disconnect(nowait=True)

    async def aclose(self) -> None:
        """Close the connection; calls still waiting fail with ``ConnectionError``."""
        link, self._link = self._link, None
        if link is None:
            return
        reader = link.reader
        if reader is not None and not reader.done():
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        await self._drop(link, rex.ConnectionError("Redis client closed"))


def _fresh(exc: BaseException) -> BaseException:
    """An exception of its own for each failed call (one instance raised in several
    tasks would mix their tracebacks), driver errors kept as they are."""
    if isinstance(exc, rex.TimeoutError | rex.ConnectionError):
        fresh: BaseException = type(exc)(*exc.args)
    else:
        fresh = rex.ConnectionError(f"Redis connection failed: {exc!r}")
    fresh.__cause__ = exc
    return fresh
