"""Redis clients for the store: standalone, Sentinel or Cluster, and error wrapping.

All clients are built here from a `RedisSettings`, with short connect and
socket timeouts so that a dead Redis gives a fast `BackendUnavailable` rather
than a hang. No client is created at import time: callers own their clients
(a lifespan, a worker's ``on_startup``, a CLI command) and close them.

A hung Redis (no reply, no reset) is worse than a dead one: every command
waits for the socket timeout, and callers queue for the pool behind those
that wait. Two guards bound that, for standalone, Sentinel and Cluster clients:

- `command_budget`: inside it (the server wraps each request in one), every
  command, pool wait included, fails after the budget instead of the socket
  timeout;
- `RedisOutage`, one latch per client: a command that runs out of its budget
  trips it; while it is tripped,
  commands fail at once (without queueing on the pool) until a background
  PING gets an answer. On a cluster the latch covers the whole client and its
  PING goes to every primary of the slot map, learnt afresh each time (so a
  failover of the hung primary is followed): it clears only when all of them answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from contextvars import Context, ContextVar, copy_context
from types import TracebackType
from typing import Any, TypeAlias

import redis.asyncio as aioredis
import redis.exceptions as rex
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, PipelineCommand, RedisCluster
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel, SlaveNotFoundError

from ._multiplex import Command, MultiplexedConnection
from .exceptions import BackendUnavailable
from .settings import RedisSettings

#: A client the store can talk to: standalone/Sentinel or Cluster.
RedisClient: TypeAlias = "aioredis.Redis | RedisCluster"

#: Sends commands in one write and returns their replies (error replies as exceptions).
CommandSender: TypeAlias = Callable[[Sequence[Command]], Awaitable[list[Any]]]

#: Driver errors that mean "Redis is not available right now".
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    rex.ConnectionError,
    rex.TimeoutError,
    rex.ClusterDownError,
    MasterNotFoundError,
    SlaveNotFoundError,
    rex.BusyLoadingError,
    rex.ReadOnlyError,
    rex.TryAgainError,
    TimeoutError,
    ConnectionError,
)


logger = logging.getLogger("sessionstore.redis")

#: Error replies that mean Redis cannot take the command now (not that it is wrong).
_REFUSALS = ("OOM", "LOADING", "READONLY", "MASTERDOWN", "CLUSTERDOWN")

#: Errors of the probe's PING that mean Redis still does not answer.
_NO_ANSWER: tuple[type[BaseException], ...] = (
    rex.ConnectionError,
    rex.TimeoutError,
    TimeoutError,
    ConnectionError,
)

_command_budget: ContextVar[float | None] = ContextVar("sessionstore_command_budget", default=None)


@contextmanager
def command_budget(seconds: float | None) -> Iterator[None]:
    """Bound every Redis command made in this context to `seconds`, pool wait included.

    A command past the budget fails with ``redis.exceptions.TimeoutError`` (a
    `BackendUnavailable` once wrapped) and trips the client's `RedisOutage`.
    None: only the client's own timeouts apply. On a cluster the budget bounds the
    whole call, redis-py's slot-map refreshes and retries included.

    .. versionadded:: 0.1
    """
    undo = set_command_budget(seconds)
    try:
        yield
    finally:
        undo()


def set_command_budget(seconds: float | None) -> Callable[[], None]:
    """What ``with command_budget(seconds)`` does on entry, as a call; returns the
    call that undoes it (cheaper than a generator-based context manager per request)."""
    token = _command_budget.set(seconds)
    return lambda: _command_budget.reset(token)


class RedisOutage:
    """A client's "Redis is not answering" latch, which recovers by itself.

    Tripped by a command that ran out of its `command_budget`: Redis hangs (a
    plain socket timeout does not trip it, a blocking command's long wait looks
    the same; nor does a refused or reset connection, which fails fast by itself
    and must not delay the first command after a restart). While tripped,
    `check` fails every command at once with ``redis.exceptions.ConnectionError``
    (so callers see what they see when Redis is down, but without waiting
    for a timeout or queueing on the pool), and a background task PINGs Redis
    every `probe_interval` seconds; the first answer clears the latch.

    .. versionadded:: 0.1
    """

    def __init__(self, *, probe_interval: float = 0.25, probe_timeout: float = 1.0) -> None:
        self.probe_interval = probe_interval
        self.probe_timeout = probe_timeout
        self._probe: asyncio.Task[None] | None = None
        #: How many times the latch was tripped (a metric and a test hook).
        self.trips = 0

    @property
    def down(self) -> bool:
        """True from a failed command until a probe got an answer."""
        return self._probe is not None and not self._probe.done()

    def check(self) -> None:
        """Fail at once while Redis is known not to answer.

        Raises:
            redis.exceptions.ConnectionError: the latch is tripped.
        """
        if self.down:
            raise rex.ConnectionError("Redis is not answering (failing fast until it does)")

    def trip(self, ping: Callable[[], Awaitable[object]]) -> None:
        """Mark Redis as not answering and start probing it with `ping`."""
        if self.down:
            return
        self.trips += 1
        logger.warning("Redis is not answering: commands fail fast until a PING succeeds")
        # The probe must not inherit a request's budget.
        self._probe = asyncio.get_running_loop().create_task(
            self._run_probe(ping), context=_fresh_context()
        )

    async def _run_probe(self, ping: Callable[[], Awaitable[object]]) -> None:
        while True:
            await asyncio.sleep(self.probe_interval)
            try:
                async with asyncio.timeout(self.probe_timeout):
                    await ping()
            except _NO_ANSWER:
                continue
            except rex.RedisError:
                pass  # an answer, even an error reply (LOADING, NOAUTH): Redis is back
            logger.info("Redis answers again")
            return

    async def aclose(self) -> None:
        """Stop probing (the client is closing)."""
        if self._probe is not None and not self._probe.done():
            self._probe.cancel()
            with suppress(asyncio.CancelledError):
                await self._probe


def _fresh_context() -> Context:
    context = copy_context()
    context.run(_command_budget.set, None)
    return context


async def _guarded(
    outage: RedisOutage,
    ping: Callable[[], Awaitable[object]],
    command: Callable[[], Awaitable[Any]],
) -> Any:
    """Run `command` under the latch and the context's budget."""
    outage.check()
    budget = _command_budget.get()
    try:
        if budget is None:
            return await command()
        try:
            async with asyncio.timeout(budget):
                return await command()
        except TimeoutError as exc:
            raise rex.TimeoutError(f"no answer from Redis within {budget:g}s") from exc
    except (rex.TimeoutError, TimeoutError):
        # Only a request's budget says Redis hangs: outside one, a timeout may be the
        # caller's own long wait (a blocking XREAD). A refused or reset connection
        # fails fast by itself and must not delay the first command after a restart.
        if budget is not None:
            outage.trip(ping)
        raise


class _GuardedPipeline(Pipeline):
    """A pipeline whose `execute` obeys its client's latch and the budget."""

    outage: RedisOutage
    probe: Callable[[], Awaitable[object]]

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        return await _guarded(  # type: ignore[no-any-return]
            self.outage, self.probe, lambda: super(_GuardedPipeline, self).execute(raise_on_error)
        )


class _GuardedRedis(aioredis.Redis):
    """A standalone (or Sentinel master) client with the outage latch and budgets, and
    a multiplexed connection for the store's hot path (`send_commands`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.outage = RedisOutage()
        self.multiplexed = MultiplexedConnection(self.connection_pool, self.response_callbacks)

    async def send_commands(self, commands: Sequence[Command]) -> list[Any]:
        """`commands` in one write on the multiplexed connection, under the latch and the
        budget; their replies, error replies as exception instances."""
        # What `_guarded` does, without its two call layers, and with the budget kept by
        # the multiplexed connection's own timer (cheaper than an `asyncio.timeout` per
        # call: docs/development.md).
        self.outage.check()
        budget = _command_budget.get()
        if budget is None:
            return await self.multiplexed.execute(commands)
        try:
            return await self.multiplexed.execute(commands, budget)
        except (rex.TimeoutError, TimeoutError):
            self.outage.trip(self._ping)
            raise

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        return await _guarded(
            self.outage,
            self._ping,
            # redis-py leaves execute_command unannotated.
            lambda: super(_GuardedRedis, self).execute_command(*args, **options),  # type: ignore[no-untyped-call]
        )

    async def _ping(self) -> object:
        return await super().execute_command("PING")  # type: ignore[no-untyped-call]

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        pipe = _GuardedPipeline(
            self.connection_pool, self.response_callbacks, transaction, shard_hint
        )
        pipe.outage, pipe.probe = self.outage, self._ping
        return pipe

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await self.outage.aclose()
        await self.multiplexed.aclose()
        await super().aclose(close_connection_pool)


class _ClusterNode(ClusterNode):
    """A cluster node whose commands give their connection back when cancelled.

    redis-py 5.3's `ClusterNode` returns a pipeline's connection (and a command's, if
    cancelled while connecting) only when it completes: each command cut short by a
    budget would leak one of the node's `max_connections`, until every call to the node
    fails with ``MaxConnectionsError``. The connection disconnects itself when
    interrupted, so handing it back is safe: its next use reconnects.
    """

    __slots__ = ()

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        connection = self.acquire_connection()
        try:
            await connection.send_packed_command(connection.pack_command(*args), False)
            return await self.parse_response(connection, args[0], **kwargs)
        finally:
            self._free.append(connection)

    async def execute_pipeline(self, commands: list[PipelineCommand]) -> bool:
        connection = self.acquire_connection()
        try:
            await connection.send_packed_command(
                connection.pack_commands(cmd.args for cmd in commands), False
            )
            failed = False
            for cmd in commands:
                try:
                    cmd.result = await self.parse_response(connection, cmd.args[0], **cmd.kwargs)
                except Exception as exc:  # redis-py's own rule: the error is the reply
                    cmd.result = exc
                    failed = True
            return failed
        finally:
            self._free.append(connection)


class _GuardedClusterPipeline(ClusterPipeline):
    """A cluster pipeline whose `execute` obeys its client's latch and the budget."""

    _client: _GuardedCluster

    async def execute(
        self, raise_on_error: bool = True, allow_redirections: bool = True
    ) -> list[Any]:
        client = self._client
        return await _guarded(  # type: ignore[no-any-return]
            client.outage,
            client._ping_primaries,
            lambda: super(_GuardedClusterPipeline, self).execute(
                raise_on_error, allow_redirections
            ),
        )


class _GuardedCluster(RedisCluster):
    """A Redis Cluster client with the outage latch and budgets.

    One latch for the whole client: a command that runs out of its budget does not
    say which node hung (a batch spans several, and redis-py may have refreshed the
    slot map on the way), so the latch's PING goes to every primary and clears only
    when all answer; while one primary hangs, commands to the others fail fast too.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.outage = RedisOutage()
        #: The probe's PINGs given up on (referenced until they end).
        self._stray_pings: set[asyncio.Future[Any]] = set()
        self._adopt_nodes()

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        return await _guarded(
            self.outage,
            self._ping_primaries,
            lambda: super(_GuardedCluster, self).execute_command(*args, **kwargs),
        )

    async def initialize(self) -> RedisCluster:
        if not self._initialize:  # the slot map is known: nothing to wait for
            return self
        await _guarded(self.outage, self._ping_primaries, self._learn_slots)
        return self

    async def _learn_slots(self) -> None:
        await super().initialize()
        self._adopt_nodes()

    def _adopt_nodes(self) -> None:
        # redis-py builds its nodes itself; same slots, so the class can be swapped.
        manager = self.nodes_manager
        for node in (*manager.nodes_cache.values(), *manager.startup_nodes.values()):
            if type(node) is ClusterNode:
                node.__class__ = _ClusterNode

    async def _ping_primaries(self) -> object:
        """The latch's probe: learn the slot map afresh, then PING every primary of it;
        a timeout from any of them is no answer.

        Afresh, so that a hung primary whose replica the cluster promoted drops out of
        the map and the latch clears without it. A refused connection is an answer:
        that node is dead, not hung, so commands to it fail fast by themselves."""
        await self._answering_first()
        try:
            # Forced: new node objects for every node, the old ones disconnected (no
            # command reaches them while the latch is tripped).
            await self.nodes_manager.initialize()
        except rex.RedisError:
            raise
        except Exception as exc:  # RedisClusterException: no node gave the slot map
            raise rex.ConnectionError(str(exc)) from exc
        self._adopt_nodes()
        primaries = self.get_primaries()
        if not primaries:
            raise rex.ConnectionError("no primary in the slot map")
        replies = await asyncio.gather(
            *(node.execute_command("PING") for node in primaries), return_exceptions=True
        )
        for reply in replies:
            if isinstance(reply, (rex.TimeoutError, TimeoutError)):
                raise reply
        return replies

    async def _answering_first(self) -> None:
        """Order the startup nodes by their answers to a PING sent to all at once, those
        that have not answered by the first answer last, so the slot map is asked of a
        node that answers: a hung startup node would keep its CLUSTER SLOTS waiting
        until the probe's timeout, and the probe would never reach the next node."""
        manager = self.nodes_manager
        pings = {
            asyncio.ensure_future(node.execute_command("PING")): node
            for node in manager.startup_nodes.values()
        }
        answered: list[ClusterNode] = []
        pending = set(pings)
        try:
            while pending and not answered:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                answered += [pings[ping] for ping in pings if ping in done and not ping.exception()]
        finally:  # the probe's timeout included
            for ping in pending:
                # Not waited for: on Python 3.11 redis-py's write (asyncio.wait_for) can
                # lose a cancellation, and the PING then waits for its reply. It ends
                # when the forced refresh disconnects the node objects it replaces.
                ping.cancel()
                self._stray_pings.add(ping)
                ping.add_done_callback(self._forget_ping)
        if answered:
            rest = [node for node in pings.values() if node not in answered]
            manager.startup_nodes = {node.name: node for node in (*answered, *rest)}

    def _forget_ping(self, ping: asyncio.Future[Any]) -> None:
        self._stray_pings.discard(ping)
        if not ping.cancelled():
            ping.exception()  # retrieved, so that asyncio does not log it

    def pipeline(
        self, transaction: Any | None = None, shard_hint: Any | None = None
    ) -> ClusterPipeline:
        super().pipeline(transaction, shard_hint)  # its refusals of both arguments
        # redis-py's cluster classes never set the `connection_pool` their base declares.
        return _GuardedClusterPipeline(self)  # type: ignore[abstract]

    async def aclose(self) -> None:
        await self.outage.aclose()
        await super().aclose()


class _SentinelMaster(_GuardedRedis):
    """A Sentinel-managed master client that also closes its Sentinel connections."""

    sentinel_manager: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.sentinel_manager is not None:
            for client in self.sentinel_manager.sentinels:
                await client.aclose()


def create_client(settings: RedisSettings, *, decode_responses: bool = True) -> RedisClient:
    """A new async client for `settings`; the caller closes it with ``aclose()``.

    .. versionadded:: 0.1
    """
    common: dict[str, Any] = {
        "username": settings.username,
        "password": settings.password.get_secret_value() if settings.password else None,
        "socket_connect_timeout": settings.connect_timeout.total_seconds(),
        "socket_timeout": settings.socket_timeout.total_seconds(),
        "decode_responses": decode_responses,
        "health_check_interval": 30,
    }
    if settings.mode == "cluster":
        cluster: RedisCluster = _GuardedCluster(  # type: ignore[abstract]
            startup_nodes=[ClusterNode(host, port) for host, port in settings.hosts],
            max_connections=settings.max_connections,
            # A bounded number of slot-map refreshes, then a clear error.
            cluster_error_retry_attempts=2,
            ssl=settings.tls,
            **common,
        )
        return cluster
    if settings.mode == "sentinel":
        sentinel = Sentinel(
            list(settings.hosts),
            socket_timeout=settings.socket_timeout.total_seconds(),
            socket_connect_timeout=settings.connect_timeout.total_seconds(),
        )
        if settings.tls:
            common["ssl"] = True
        master: _SentinelMaster = sentinel.master_for(
            settings.sentinel_master, redis_class=_SentinelMaster, db=settings.database, **common
        )
        master.sentinel_manager = sentinel
        return master
    if settings.unix_socket_path:
        return _GuardedRedis(
            unix_socket_path=settings.unix_socket_path,
            db=settings.database,
            max_connections=settings.max_connections,
            **common,
        )
    host, port = settings.hosts[0]
    pool = aioredis.BlockingConnectionPool(
        host=host,
        port=port,
        db=settings.database,
        max_connections=settings.max_connections,
        # Waiting for a free pooled connection is bounded like a command.
        timeout=settings.socket_timeout.total_seconds(),  # type: ignore[arg-type]
        connection_class=aioredis.SSLConnection if settings.tls else aioredis.Connection,
        **common,
    )
    # from_pool: the client owns the pool, so aclose() closes its connections too.
    return _GuardedRedis.from_pool(pool)


def is_cluster(client: RedisClient) -> bool:
    """True for a Redis Cluster client."""
    return isinstance(client, RedisCluster)


def command_sender(client: RedisClient) -> CommandSender | None:
    """The multiplexed sender of a client made by `create_client` for a standalone Redis
    or Sentinel; None for a cluster client or one made elsewhere (use its pipeline)."""
    return client.send_commands if isinstance(client, _GuardedRedis) else None


def backend_errors(action: object) -> _BackendErrors:
    """Turn driver errors meaning "Redis is unavailable" into `BackendUnavailable`.

    Out-of-memory refusals (``maxmemory`` with ``noeviction``) are reported the
    same way: the store cannot take writes until an operator acts. `action`
    names what was being done in the message (formatted only on an error).
    """
    return _BackendErrors(action)


class _BackendErrors:
    """`backend_errors` as a plain class: it wraps every hot-path call, and a
    generator-based context manager costs several times as much to enter."""

    __slots__ = ("action",)

    def __init__(self, action: object) -> None:
        self.action = action

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            return
        if isinstance(exc, _UNAVAILABLE):
            raise BackendUnavailable(f"Redis unavailable during {self.action}: {exc}") from exc
        if isinstance(exc, rex.ResponseError) and str(exc).startswith(_REFUSALS):
            raise BackendUnavailable(f"Redis refused {self.action}: {exc}") from exc
