"""One Redis connection that many tasks send commands on at once, replies in order.

The store's hot path (script calls and the read's plain commands, none of
which blocks) goes through one `MultiplexedConnection` per standalone or
Sentinel client instead of redis-py's pipeline: a call packs its commands
with hiredis (C) and writes them with redis-py's ``send_packed_command``;
the replies are taken as they arrive by a protocol of ours installed on the
connection's transport once redis-py has connected (``data_received`` feeds
a hiredis reader and hands them out in the order the commands went out:
Redis answers the commands of one connection in order), so a reply wakes its
caller directly, not through a reader task first. Concurrent calls share the
socket: at 32 at a time one read often brings back many calls' replies, and
the calls that then go on in the same event-loop iteration write together
(auto-pipelining): a call that finds nothing in flight writes at once,
unless the last read answered several calls (they resume together, so the
others are about to write too); one that finds calls in flight queues its
bytes, and one flush task, scheduled by the first of them, writes the whole
queue in one socket write at the next iteration. A lone caller (c=1) never
waits for a flush. One write instead of several saves syscalls and Redis
wake-ups, and the queue keeps the write order equal to the order of the
waiting calls.

Why not redis-py's pipeline, and what is still redis-py's: docs/development.md.
The connection itself is a redis-py connection made by the client's own pool
class and settings (address, AUTH, TLS, database, Sentinel master lookup).

Bounds: at most the pool's ``max_connections`` calls wait for replies at once
(more wait for a slot, as they would for a pooled connection), so a hung
Redis holds no more work than the pool would have let through; the same
bound caps the bytes queued for a flush or left in the socket's send buffer
(only calls counted as in flight have bytes there). Connecting,
handshake included, is bounded by the connect and socket timeouts; while
calls wait, a socket timeout without a byte from Redis fails them all with
``redis.exceptions.TimeoutError`` and drops the connection, and the next call
connects again; a connection that closes (Redis gone, the socket cut) fails
the calls waiting on it with ``ConnectionError``. A caller that gives up (a
cancelled task, a request budget) leaves its replies to be read and dropped,
so the others' stay in step. A ``READONLY`` reply (a Sentinel master that
became a replica) is answered and the connection dropped, so the next call
looks the master up again.
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
#: What the hiredis reader answers while a reply is still incomplete.
_INCOMPLETE = object()


@dataclass(slots=True)
class _Call:
    """The commands one caller wrote and the future its replies go to."""

    future: asyncio.Future[list[Any]]
    callbacks: list[Callback | None]
    replies: list[Any] = field(default_factory=list)


@dataclass(slots=True, eq=False)
class _Link:
    """One connection, its reply reader and the calls waiting for replies on it."""

    connection: AbstractConnection
    transport: asyncio.Transport
    parser: Any  # hiredis.Reader (hiredis ships no type hints)
    loop: asyncio.AbstractEventLoop
    waiting: deque[_Call] = field(default_factory=deque)
    #: Packed commands of calls in `waiting` that the flush task has still to write.
    queued: list[bytes] = field(default_factory=list)
    #: The task that writes `queued` at the next loop iteration, while one is due.
    flush: asyncio.Task[None] | None = None
    #: The last read answered several calls: they resume together, so a write is queued.
    resuming: bool = False
    #: While calls wait: when the socket timeout runs out without a byte from Redis.
    expect_by: float | None = None
    #: The timer that checks `expect_by` (at most one, re-armed lazily).
    watchdog: asyncio.TimerHandle | None = None
    last_used: float = 0.0
    dropped: bool = False
    #: The task that closes redis-py's side of the connection, once dropped.
    closing: asyncio.Task[None] | None = None


class _Deadline:
    """A call's budget: one timer, armed when the call starts and cancelled when it
    ends. While the caller awaits something of its own (a slot, connecting, its
    write) the timer cancels the caller's task, as ``asyncio.timeout`` would; once
    the call waits for its replies the timer fails the call's future instead (no
    task cancelled and uncancelled), and the replies are dropped when they come."""

    __slots__ = ("budget", "call", "cancelling", "expired", "interrupts", "task", "timer")

    def __init__(self, call: _Call, budget: float, loop: asyncio.AbstractEventLoop) -> None:
        self.call = call
        self.budget = budget
        task = asyncio.current_task(loop)
        assert task is not None  # execute runs in a task
        self.task = task
        self.cancelling = task.cancelling()
        self.interrupts = True
        self.expired = False
        self.timer = loop.call_at(loop.time() + budget, self._expire)

    def _expire(self) -> None:
        self.expired = True
        if self.interrupts:
            self.task.cancel()
        elif not self.call.future.done():
            self.call.future.set_exception(self.error())

    def ended(self) -> bool:
        """Whether the caller's task was cancelled by this budget alone (then the
        cancellation is taken back, as ``asyncio.timeout`` does); stops the timer."""
        self.timer.cancel()
        return self.expired and self.task.uncancel() <= self.cancelling

    def error(self) -> rex.TimeoutError:
        """What a call past its budget fails with."""
        return rex.TimeoutError(f"no answer from Redis within {self.budget:g}s")


def pack(commands: Sequence[Command]) -> bytes:
    """The commands in the Redis protocol, as one byte string (hiredis packs in C)."""
    return b"".join([hiredis.pack_command(tuple(command)) for command in commands])


class MultiplexedConnection:
    """A connection to one Redis shared by every caller of one client.

    Args:
        pool: the client's connection pool; its connection class and settings
            make the connection (it is not taken from the pool, so the pool's
            own connections stay free for everything else), and its
            ``max_connections`` bounds the calls in flight.
        callbacks: the client's reply callbacks (``client.response_callbacks``),
            applied as redis-py's pipeline applies them, so replies look the same.

    .. versionadded:: 0.1
    """

    def __init__(self, pool: ConnectionPool, callbacks: Mapping[str | bytes, Any]) -> None:
        self._pool = pool
        self._callbacks = callbacks
        settings = pool.connection_kwargs
        self._timeout: float | None = settings.get("socket_timeout")
        connect = settings.get("socket_connect_timeout")
        self._connect_timeout = (connect or 0) + (self._timeout or 0) or None
        self._health_interval: float = settings.get("health_check_interval") or 0
        self._limit = max(1, pool.max_connections)
        self._link: _Link | None = None
        self._connecting = asyncio.Lock()
        self._slot_waiters: deque[asyncio.Future[None]] = deque()
        self._callback_cache: dict[str, Callback | None] = {}

    async def execute(self, commands: Sequence[Command], budget: float | None = None) -> list[Any]:
        """The replies to `commands`, written together: one round trip.

        An error reply is returned in its place as an exception instance (a
        ``ResponseError``), as redis-py's pipeline returns it with
        ``raise_on_error=False``. `budget`: seconds the whole call may take, the
        wait for a slot and connecting included; past it the call fails and its
        replies, if they come, are read and dropped.

        Raises:
            redis.exceptions.ConnectionError / TimeoutError: Redis could not be
                reached, or did not answer within the socket timeout or `budget`.
        """
        loop = asyncio.get_running_loop()
        call = _Call(loop.create_future(), [self._callback(command[0]) for command in commands])
        packed = pack(commands)
        deadline = None if budget is None else _Deadline(call, budget, loop)
        try:
            if self._link is not None and len(self._link.waiting) >= self._limit:
                await self._wait_for_slot()
            link = self._link
            if link is None or not self._usable(link, loop):
                link = await self._connect()
            if self._enqueue(link, call, packed, loop):
                try:
                    await link.connection.send_packed_command(packed, check_health=False)
                except BaseException as exc:
                    await _closed(self._drop(link, exc))
                    raise
        except asyncio.CancelledError:
            if deadline is not None and deadline.ended():
                raise deadline.error() from None
            raise
        except BaseException:
            if deadline is not None:
                deadline.timer.cancel()
            raise
        if deadline is None:
            return await call.future
        deadline.interrupts = False  # from here the timer fails the future instead
        try:
            return await call.future
        finally:
            deadline.timer.cancel()

    def _enqueue(
        self, link: _Link, call: _Call, packed: bytes, loop: asyncio.AbstractEventLoop
    ) -> bool:
        """Put `call` in the calls waiting on `link`; True if the caller writes `packed`
        at once, False if the flush task writes it at the next loop iteration. Nothing
        awaits from here to the write, so the calls' writes are in the order of the
        queue: the order their replies come back in."""
        now = link.last_used = loop.time()
        if link.waiting or link.resuming:
            if not link.waiting and self._timeout is not None:
                self._expect(link, now + self._timeout)
            # Calls in flight (their replies come first anyway) or resumed with this
            # one: this write waits for the others of this loop iteration and goes
            # out with them.
            link.waiting.append(call)
            link.queued.append(packed)
            if link.flush is None:
                link.flush = loop.create_task(self._flush(link))
            return False
        # Alone, and no other call resumed with it: written at once, so a lone
        # caller pays no extra loop iteration.
        if self._timeout is not None:
            self._expect(link, now + self._timeout)
        link.waiting.append(call)
        return True

    async def _flush(self, link: _Link) -> None:
        """Write the calls queued on `link` in this loop iteration, in one write;
        a failed write fails them all (and every other call on `link`)."""
        link.flush = None
        link.resuming = False
        if link.dropped or not link.queued:
            return
        packed = b"".join(link.queued) if len(link.queued) > 1 else link.queued[0]
        link.queued.clear()
        try:
            await link.connection.send_packed_command(packed, check_health=False)
        except Exception as exc:
            await _closed(self._drop(link, exc))

    def _callback(self, name: str) -> Callback | None:
        try:
            return self._callback_cache[name]
        except KeyError:
            found = self._callback_cache[name] = self._callbacks.get(name)
            return found

    async def _wait_for_slot(self) -> None:
        """Wait (at most the socket timeout, as for a pooled connection) until fewer
        than the limit of calls are in flight."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._timeout):
                while self._link is not None and len(self._link.waiting) >= self._limit:
                    slot = loop.create_future()
                    self._slot_waiters.append(slot)
                    try:
                        await slot
                    except BaseException:
                        if slot.done() and not slot.cancelled():
                            self._wake_one()  # pass the slot on
                        raise
        except TimeoutError as exc:
            raise rex.ConnectionError("No connection available.") from exc

    def _wake_one(self) -> None:
        while self._slot_waiters:
            slot = self._slot_waiters.popleft()
            if not slot.done():
                slot.set_result(None)
                return

    def _usable(self, link: _Link, loop: asyncio.AbstractEventLoop) -> bool:
        """Not dropped, still connected, and (when the client asks for health checks)
        not idle longer than the health-check interval: a connection that sat idle
        may have been cut silently, so it is replaced rather than trusted."""
        if link.dropped or not link.connection.is_connected or link.transport.is_closing():
            return False
        return not (
            self._health_interval
            and not link.waiting
            and loop.time() - link.last_used > self._health_interval
        )

    async def _connect(self) -> _Link:
        async with self._connecting:
            current = self._link
            loop = asyncio.get_running_loop()
            if current is not None and self._usable(current, loop):
                return current
            if current is not None and not current.waiting:
                await _closed(self._drop(current, rex.ConnectionError("connection replaced")))
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
            self._link = link = self._take_replies(connection, loop)
            return link

    def _take_replies(
        self, connection: AbstractConnection, loop: asyncio.AbstractEventLoop
    ) -> _Link:
        """Take the replies of a connection redis-py has just made (handshake done)
        in a protocol of ours, installed on its transport (TLS included), so a reply
        wakes its caller directly; redis-py's stream protocol stays behind it for
        the writes' flow control and for what its writer checks."""
        writer = connection._writer
        stream = connection._reader
        assert writer is not None and stream is not None  # connected
        transport = writer.transport
        assert isinstance(transport, asyncio.Transport)  # what open_connection makes
        link = _Link(connection, transport, _reader_for(connection), loop)
        transport.set_protocol(_Replies(self, link, transport.get_protocol()))
        # Bytes the stream read ahead of the handshake's replies (none, as a rule).
        left = bytes(stream._buffer)  # type: ignore[attr-defined]
        stream._buffer.clear()  # type: ignore[attr-defined]
        if left:
            self._received(link, left)
        return link

    def _expect(self, link: _Link, by: float | None) -> None:
        """Set when the calls waiting on `link` must have heard from Redis; the one
        watchdog timer is armed only when none is, so setting this costs nearly
        nothing per call (a timer per call would cost more than the call's reads)."""
        link.expect_by = by
        if by is not None and link.watchdog is None:
            link.watchdog = asyncio.get_running_loop().call_at(by, self._watch, link)

    def _watch(self, link: _Link) -> None:
        link.watchdog = None
        if link.dropped or link.expect_by is None:
            return
        if link.loop.time() < link.expect_by:
            self._expect(link, link.expect_by)
        else:
            self._drop(link, rex.TimeoutError("Timeout reading from Redis"))

    def _received(self, link: _Link, data: bytes) -> None:
        """Hand the replies in `data` to the waiting calls, in order (called by the
        transport as bytes arrive: the caller's future is set without a task of ours
        in between); a reply nobody asked for, a parse error or ``READONLY`` drops
        the connection."""
        waiting, parser = link.waiting, link.parser
        parser.feed(data)
        # Bytes came: the calls still waiting get a new socket timeout.
        if waiting and self._timeout is not None:
            link.expect_by = link.loop.time() + self._timeout
        answered = 0
        try:
            while (reply := parser.gets()) is not _INCOMPLETE:
                if not waiting:
                    raise rex.ConnectionError("Redis sent a reply nobody asked for")
                call = waiting[0]
                call.replies.append(reply)
                if len(call.replies) == len(call.callbacks):
                    waiting.popleft()
                    answered += 1
                    if not waiting:
                        link.expect_by = None
                    _answer(call)
                    if self._slot_waiters:
                        self._wake_one()
                if isinstance(reply, rex.ReadOnlyError):
                    raise rex.ConnectionError("Redis is a replica now (READONLY)")
        except Exception as exc:  # hiredis could not parse, or a reply callback failed
            self._drop(link, exc)
            return
        # Several calls answered by this read resume together: their writes are queued.
        link.resuming = answered > 1

    def _drop(self, link: _Link, exc: BaseException) -> asyncio.Task[None] | None:
        """Fail every call waiting on `link` and close it (the next call connects
        again): after a failed read or write nobody knows which reply is whose.

        Returns the task that closes redis-py's side of the connection, to be awaited
        by callers that can (the transport's callbacks cannot), or None if `link` was
        dropped already."""
        if self._link is link:
            self._link = None
        if link.dropped:
            return None
        link.dropped = True
        waiting = list(link.waiting)
        link.waiting.clear()
        link.queued.clear()
        for call in waiting:
            if not call.future.done():
                call.future.set_exception(_fresh(exc))
        while self._slot_waiters:
            self._wake_one()
        if link.watchdog is not None:
            link.watchdog.cancel()
        link.transport.abort()  # replies still on their way are nobody's now
        link.closing = link.loop.create_task(link.connection.disconnect(nowait=True))
        return link.closing

    async def aclose(self) -> None:
        """Close the connection; calls still waiting fail with ``ConnectionError``."""
        link, self._link = self._link, None
        if link is None:
            return
        self._drop(link, rex.ConnectionError("Redis client closed"))
        pending = [task for task in (link.closing, link.flush) if task is not None]
        await asyncio.gather(*pending, return_exceptions=True)


class _Replies(asyncio.Protocol):
    """The protocol of a multiplexed connection's transport: bytes that arrive go to
    `MultiplexedConnection._received`; writing (pause and resume) and the end of the
    connection are passed on to redis-py's stream protocol, so its writer's ``drain``
    waits and fails as before."""

    def __init__(
        self, owner: MultiplexedConnection, link: _Link, streams: asyncio.BaseProtocol
    ) -> None:
        self._owner = owner
        self._link = link
        self._streams = streams

    def data_received(self, data: bytes) -> None:
        self._owner._received(self._link, data)

    def eof_received(self) -> None:
        return None  # the transport closes itself, then connection_lost

    def connection_lost(self, exc: Exception | None) -> None:
        self._streams.connection_lost(exc)
        self._owner._drop(self._link, exc or rex.ConnectionError("Connection closed by server."))

    def pause_writing(self) -> None:
        self._streams.pause_writing()

    def resume_writing(self) -> None:
        self._streams.resume_writing()


async def _closed(closing: asyncio.Task[None] | None) -> None:
    """Wait for a dropped link's connection to be closed (None: closed by another)."""
    if closing is not None:
        await closing


def _reader_for(connection: AbstractConnection) -> Any:
    """A hiredis reader that decodes and maps error replies as the connection's
    own parser does."""
    encoder = connection.encoder
    options: dict[str, Any] = {
        "protocolError": rex.InvalidResponse,
        "replyError": connection._parser.parse_error,
        "notEnoughData": _INCOMPLETE,
    }
    if encoder.decode_responses:
        options["encoding"] = encoder.encoding
        options["errors"] = encoder.encoding_errors
    return hiredis.Reader(**options)


def _answer(call: _Call) -> None:
    """Hand a call its replies, with redis-py's reply callbacks applied."""
    if call.future.done():
        return  # the caller gave up; its replies are dropped
    replies = call.replies
    for index, callback in enumerate(call.callbacks):
        reply = replies[index]
        if callback is not None and not isinstance(reply, Exception):
            replies[index] = callback(reply)
    call.future.set_result(replies)


def _fresh(exc: BaseException) -> BaseException:
    """An exception of its own for each failed call (one instance raised in several
    tasks would mix their tracebacks), driver errors kept as they are."""
    if isinstance(exc, rex.TimeoutError | rex.ConnectionError):
        fresh: BaseException = type(exc)(*exc.args)
    else:
        fresh = rex.ConnectionError(f"Redis connection failed: {exc!r}")
    fresh.__cause__ = exc
    return fresh
