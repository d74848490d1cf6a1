"""`BreakerRegistry`: the breakers of one process and the tasks that keep them current.

It owns three background tasks:

- the listener (pub/sub) applies every announced transition at once;
- the poller re-reads, every quarter of `staleness_bound`, each breaker that
  no push or script reply confirmed within half of it (one batch), and notes
  the names in the fleet-wide index now and then;
- the flusher sends buffered outcomes `record_flush_interval` after the
  first one of a batch arrives (one batch for all breakers).

Guarded calls never wait for any of them.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import time
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any

from pydantic import ValidationError

from .._keys import KeySpace
from .._redis import RedisClient
from ..exceptions import BackendUnavailable
from ..settings import BreakerSettings
from ..tasks import stop_tasks
from ._admin import BreakerAdmin
from ._guard import Breaker, Classifier
from ._health import RedisHealth
from ._listener import TransitionListener
from ._model import BreakerHealth, BreakerSnapshot, BreakerState
from ._outcomes import OutcomeBuffer
from ._policy import WindowCounts
from ._remote import BreakerScripts, PendingRecord
from ._view import LocalView

logger = logging.getLogger("sessionstore.breaker")

#: Called with (name, old snapshot, new snapshot) when a local view changes state.
TransitionCallback = Callable[[str, BreakerSnapshot, BreakerSnapshot], None]

#: How often the registry notes its breaker names in the fleet-wide index (seconds).
_INDEX_EVERY = 30.0


class RegistryState(enum.Enum):
    """A registry's lifecycle: it opens once and never reopens."""

    UNOPENED = 1
    OPENED = 2
    CLOSED = 3


class BreakerRegistry:
    """The circuit breakers of one process, kept in step with the fleet.

    Args:
        redis: the store's client (standalone, Sentinel or Cluster); the caller closes it.
        settings: the fleet's breaker settings.
        key_prefix: the store's key prefix.
        is_failure: default classifier for exceptions leaving a guarded block
            (default: every `Exception` counts against the upstream).
        push: subscribe to transitions (False: polling alone keeps views fresh).

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        redis: RedisClient,
        settings: BreakerSettings,
        *,
        key_prefix: str = "ss",
        is_failure: Classifier | None = None,
        push: bool = True,
    ) -> None:
        self.settings = settings
        self.scripts = BreakerScripts(redis, KeySpace(key_prefix, 1), settings)
        self.admin = BreakerAdmin.for_scripts(self.scripts)
        self.redis_health = RedisHealth(settings.redis_down_policy)
        self._redis = redis
        self._is_failure = is_failure
        self._push = push
        self._breakers: dict[str, Breaker] = {}
        self._views: dict[str, LocalView] = {}
        self._buffer = OutcomeBuffer()
        self._flush_wanted = asyncio.Event()
        self._callbacks: list[TransitionCallback] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._spawned: set[asyncio.Task[None]] = set()
        self._listener: TransitionListener | None = None
        self._last_index = -math.inf
        self._state = RegistryState.UNOPENED
        bound = settings.staleness_bound.total_seconds()
        self._poll_every = bound / 4
        self._max_age = bound / 2

    # -- lifecycle ---------------------------------------------------------------

    async def open(self) -> BreakerRegistry:
        """Start the listener, the poller and the flusher.

        Raises:
            RuntimeError: the registry was opened before (it cannot be reopened).
        """
        if self._state is not RegistryState.UNOPENED:
            raise RuntimeError("a BreakerRegistry can be opened only once")
        self._state = RegistryState.OPENED
        if self._push:
            self._listener = TransitionListener(
                self._redis,
                self.scripts.channel,
                on_message=self._on_message,
                on_subscribed=self.refresh,
                max_retry=self._max_age,
            )
            self._tasks.append(asyncio.create_task(self._listener.run()))
        self._tasks.append(asyncio.create_task(self._poll_forever()))
        if self.settings.record_flush_interval.total_seconds() > 0:
            self._tasks.append(asyncio.create_task(self._flush_forever()))
        return self

    async def aclose(self) -> None:
        """Stop the tasks, flush what is buffered (best effort) and return probe leases."""
        if self._state is RegistryState.CLOSED:
            return
        self._state = RegistryState.CLOSED
        await stop_tasks(self._tasks)
        await self.flush()
        if self._spawned:
            await asyncio.gather(*self._spawned, return_exceptions=True)

    async def __aenter__(self) -> BreakerRegistry:
        """`open` the registry."""
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def check_open(self) -> None:
        """Raise RuntimeError unless the registry is open (a closed one no longer follows Redis)."""
        if self._state is not RegistryState.OPENED:
            raise RuntimeError(f"the BreakerRegistry is {self._state.name.lower()}")

    # -- breakers ----------------------------------------------------------------

    async def get(self, name: str) -> Breaker:
        """The breaker for `name`; the first call per name reads its state (one round trip).

        If Redis is unreachable the breaker starts as closed-but-unconfirmed, so
        the Redis-down policy decides its calls, and the poller loads it later.

        Raises:
            InvalidInput: a malformed name; nothing reached Redis.
            RuntimeError: the registry is not open.
        """
        self.check_open()
        found = self._breakers.get(name)
        if found is not None:
            return found
        self.scripts.keys.breaker(name)  # raises InvalidInput before any I/O
        snapshot: BreakerSnapshot
        try:
            # Side by side: one round trip of latency (the index may be on another node).
            read, _ = await asyncio.gather(
                self.scripts.read_many([name]), self._touch_index([name])
            )
            snapshot = read[name]
            self.redis_health.ok()
            confirmed = True
        except BackendUnavailable as exc:
            self.redis_health.failed(exc)
            snapshot = BreakerSnapshot(name=name, state=BreakerState.CLOSED, gen=0, now_ms=0)
            confirmed = False
        found = self._breakers.get(name)
        if found is not None:  # another task registered it meanwhile
            self.apply(snapshot)
            return found
        view = LocalView(snapshot, time.monotonic(), confirmed=confirmed)
        self._views[name] = view
        breaker = self._breakers[name] = Breaker(name, view, self)
        return breaker

    def names(self) -> list[str]:
        """Names of the breakers this process holds."""
        return sorted(self._breakers)

    def on_transition(self, callback: TransitionCallback) -> None:
        """Call ``callback(name, old, new)`` whenever a local view changes state."""
        self._callbacks.append(callback)

    def health(self) -> BreakerHealth:
        """Redis reachability, policy, push status and each breaker's local state (no I/O)."""
        h = self.redis_health
        return BreakerHealth(
            redis_reachable=h.reachable,
            down_since=h.down_since,
            last_error=h.last_error,
            policy=h.policy,
            push_live=self._listener is not None and self._listener.live,
            staleness_bound=self.settings.staleness_bound,
            outcomes_dropped=h.outcomes_dropped,
            breakers={name: b.state for name, b in sorted(self._breakers.items())},
        )

    # -- manual control (applied locally at once, announced to everyone) -----------

    async def force_open(self, name: str, *, actor: str, reason: str) -> BreakerSnapshot:
        """See `BreakerAdmin.force_open`."""
        return self._applied(await self.admin.force_open(name, actor=actor, reason=reason))

    async def force_closed(self, name: str, *, actor: str, reason: str) -> BreakerSnapshot:
        """See `BreakerAdmin.force_closed`."""
        return self._applied(await self.admin.force_closed(name, actor=actor, reason=reason))

    async def reset(self, name: str, *, actor: str, reason: str = "") -> BreakerSnapshot:
        """See `BreakerAdmin.reset`."""
        return self._applied(await self.admin.reset(name, actor=actor, reason=reason))

    def _applied(self, snapshot: BreakerSnapshot) -> BreakerSnapshot:
        self.apply(snapshot)
        return snapshot

    # -- what breakers call (BreakerHost) ---------------------------------------------

    def classify(self, exc: BaseException) -> bool:
        """True when `exc` counts against the upstream."""
        return self._is_failure(exc) if self._is_failure is not None else True

    def apply(self, snapshot: BreakerSnapshot) -> None:
        """Update the local view of ``snapshot.name`` if the snapshot is not older."""
        view = self._views.get(snapshot.name)
        if view is None:
            return
        old = view.snapshot
        if view.apply(snapshot, time.monotonic()):
            for callback in self._callbacks:
                try:
                    callback(snapshot.name, old, snapshot)
                except Exception:
                    logger.exception("breaker transition callback failed")

    async def record(self, name: str, gen: int, *, failure: bool, slow: bool) -> None:
        """Record one outcome: buffered, or inline when `record_flush_interval` is zero."""
        if not self.redis_health.reachable:
            self.redis_health.dropped(1)
            return
        if self.settings.record_flush_interval.total_seconds() > 0:
            self._buffer.add(name, gen, failure=failure, slow=slow)
            self._flush_wanted.set()
            return
        item = PendingRecord(name, gen, WindowCounts(1, int(failure), int(slow)))
        try:
            _, snapshot = await self.scripts.record(item)
        except BackendUnavailable as exc:
            self.redis_health.failed(exc)
            self.redis_health.dropped(1)
            return
        self.redis_health.ok()
        self.apply(snapshot)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run `coro` as a task the registry waits for on close."""
        task = asyncio.create_task(coro)
        self._spawned.add(task)
        task.add_done_callback(self._spawned.discard)
        return task

    # -- keeping views current ------------------------------------------------------

    async def flush(self) -> None:
        """Send the buffered outcomes now (one batch)."""
        items = self._buffer.take()
        if not items:
            return
        try:
            replies = await self.scripts.record_many(items)
        except BackendUnavailable as exc:
            self.redis_health.failed(exc)
            self.redis_health.dropped(sum(item.counts.calls for item in items))
            return
        self.redis_health.ok()
        for _, snapshot in replies:
            self.apply(snapshot)

    async def refresh(self) -> None:
        """Re-read every breaker now (after a (re)subscription, or on demand)."""
        await self._poll(max_age=None)

    async def _poll(self, max_age: float | None) -> None:
        now = time.monotonic()
        names = [
            name
            for name, view in self._views.items()
            if max_age is None or view.is_stale(now, max_age)
        ]
        if now - self._last_index >= _INDEX_EVERY and self._views:
            self._last_index = now
            self.spawn(self._touch_index(self.names()))
        if not names:
            return
        try:
            statuses = await self.scripts.read_many(names)
        except BackendUnavailable as exc:
            self.redis_health.failed(exc)
            return
        self.redis_health.ok()
        for status in statuses.values():
            self.apply(status)
            view = self._views[status.name]
            view.confirmed_at = max(view.confirmed_at, now)

    async def _touch_index(self, names: list[str]) -> None:
        # The index is a hint for operators (`breakers list`), on a slot of its own:
        # its outage is not the breakers' outage. Run aside, retried next round.
        try:
            await self.scripts.touch_index(names)
        except BackendUnavailable:
            logger.debug("could not note breakers in the index", exc_info=True)

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self._poll_every)
            try:
                await self._poll(self._max_age)
            except Exception:
                # Unavailability is handled inside; anything else is a bug to see, and
                # the poller must outlive it or views would go stale for good.
                logger.exception("breaker poll failed")

    async def _flush_forever(self) -> None:
        interval = self.settings.record_flush_interval.total_seconds()
        while True:
            await self._flush_wanted.wait()
            await asyncio.sleep(interval)
            self._flush_wanted.clear()
            try:
                await self.flush()
            except Exception:
                logger.exception("breaker flush failed; its outcomes are dropped")

    def _on_message(self, payload: str) -> None:
        try:
            snapshot = BreakerSnapshot.model_validate_json(payload)
        except ValidationError:
            logger.warning("ignoring a malformed breaker announcement: %.200r", payload)
            return
        self.apply(snapshot)
