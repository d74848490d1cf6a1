"""The guarded call: `Breaker.guard()`, `Breaker.call()`, `Breaker.acquire()` and `Attempt`.

With the breaker closed, taking permission reads only the local view (no
round trip) and the outcome goes to the registry (batched, or one inline
round trip). Past an open period, or while half-open, taking permission is
one script call that may grant a probe lease. A probe's outcome is recorded
inline; a cancelled probe returns its lease at once, even if the cancelled
task is cancelled again while returning it.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine
from enum import StrEnum
from types import TracebackType
from typing import Any, Literal, ParamSpec, Protocol, TypeVar

from ..exceptions import BackendUnavailable, BreakerOpen
from ..settings import BreakerSettings
from ._health import RedisHealth, logger
from ._model import BreakerSnapshot, BreakerState, Outcome
from ._policy import Verdict, is_slow
from ._remote import BreakerScripts
from ._view import LocalView

P = ParamSpec("P")
T = TypeVar("T")

#: Decides whether an exception leaving a guarded block is the upstream's fault.
Classifier = Callable[[BaseException], bool]


class BreakerHost(Protocol):
    """What a `Breaker` needs from its registry."""

    settings: BreakerSettings
    scripts: BreakerScripts
    redis_health: RedisHealth

    def check_open(self) -> None:
        """Raise unless the host still keeps its views current."""

    def classify(self, exc: BaseException) -> bool:
        """True when `exc` counts against the upstream."""
        raise NotImplementedError

    def apply(self, snapshot: BreakerSnapshot) -> None:
        """Update a local view from a script reply."""

    async def record(self, name: str, gen: int, *, failure: bool, slow: bool) -> None:
        """Record one outcome (buffered or inline)."""

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run `coro` as a task the host waits for when it closes."""
        raise NotImplementedError


class AttemptKind(StrEnum):
    """How an admitted call will be accounted for."""

    #: Closed: the outcome goes to the fleet-wide window.
    RECORDED = "recorded"
    #: One of the fleet's half-open probes, holding a lease.
    PROBE = "probe"
    #: Forced closed, or Redis down under fail_open: nothing is recorded.
    UNRECORDED = "unrecorded"


class Attempt:
    """Permission for one call; tell it how the call went.

    Inside `Breaker.guard()` the block's exit finishes it; mark the outcome
    explicitly with `success`, `failure` or `ignore` when the block's exit
    does not say it (an IMAP ``NO`` is a result, not an exception). After
    `Breaker.acquire()`, call `finish` or `cancel` yourself.

    .. versionadded:: 0.1
    """

    def __init__(
        self, breaker: Breaker, kind: AttemptKind, gen: int, lease_id: str | None = None
    ) -> None:
        self.breaker = breaker
        self.kind = kind
        self.gen = gen
        self.lease_id = lease_id
        self.started = time.monotonic()
        self.outcome: Outcome | None = None
        self._done = False

    @property
    def is_probe(self) -> bool:
        """True when this call is one of the fleet's half-open probes."""
        return self.kind is AttemptKind.PROBE

    def success(self) -> None:
        """Mark the call successful (the default when a guarded block ends normally)."""
        self.outcome = Outcome.SUCCESS

    def failure(self) -> None:
        """Mark the call failed: it counts against the upstream."""
        self.outcome = Outcome.FAILURE

    def ignore(self) -> None:
        """Mark the call as telling nothing about the upstream's health."""
        self.outcome = Outcome.IGNORED

    async def finish(self, outcome: Outcome | None = None) -> None:
        """Record the outcome (`outcome`, else the marked one, else success). Idempotent."""
        if self._done:
            return
        self._done = True
        final = outcome or self.outcome or Outcome.SUCCESS
        await self.breaker._finish(self, final, time.monotonic() - self.started)

    async def cancel(self) -> None:
        """Give the permission back unused; a probe's lease is returned at once."""
        if self._done:
            return
        self._done = True
        if self.kind is AttemptKind.PROBE:
            await self.breaker._return_lease(self)


class Guard:
    """``async with breaker.guard() as attempt:`` — see `Breaker.guard`."""

    def __init__(self, breaker: Breaker, is_failure: Classifier | None) -> None:
        self._breaker = breaker
        self._is_failure = is_failure
        self._attempt: Attempt | None = None

    async def __aenter__(self) -> Attempt:
        """Take permission; raises `BreakerOpen` when refused."""
        self._attempt = await self._breaker.acquire()
        return self._attempt

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        attempt = self._attempt
        if attempt is None:
            return
        if exc is None:
            await attempt.finish()
        elif isinstance(exc, Exception):
            if attempt.outcome is None:
                attempt.outcome = self._classify(exc)
            await attempt.finish()
        else:
            # Cancellation (or interpreter exit) says nothing about the upstream.
            await attempt.cancel()

    def _classify(self, exc: Exception) -> Outcome:
        if isinstance(exc, BreakerOpen):
            return Outcome.IGNORED
        classify = self._is_failure or self._breaker._host.classify
        return Outcome.FAILURE if classify(exc) else Outcome.IGNORED


class Breaker:
    """The circuit breaker of one upstream, as seen by one process.

    Get it from `BreakerRegistry.get`; never build it directly.

    .. versionadded:: 0.1
    """

    def __init__(self, name: str, view: LocalView, host: BreakerHost) -> None:
        self.name = name
        self._view = view
        self._host = host

    def __repr__(self) -> str:
        return f"<Breaker {self.name} {self.state}>"

    @property
    def state(self) -> BreakerState:
        """The state in the local view (no I/O); an elapsed open breaker reads half-open."""
        return self._view.state(time.monotonic())

    @property
    def snapshot(self) -> BreakerSnapshot:
        """The last state learned from Redis."""
        return self._view.snapshot

    def guard(self, *, is_failure: Classifier | None = None) -> Guard:
        """Guard a block: ``async with breaker.guard() as attempt: ...``.

        Raises `BreakerOpen` on entry when refused. An exception leaving the
        block counts as a failure when `is_failure(exc)` (default: the
        registry's classifier) says so; `BreakerOpen` and cancellation never
        count. A block that ends normally is a success unless marked otherwise.
        """
        return Guard(self, is_failure)

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` under `guard()`.

        Raises:
            BreakerOpen: the breaker refused the call (``retry_after`` in seconds).
        """
        async with self.guard():
            return await fn(*args, **kwargs)

    async def acquire(self) -> Attempt:
        """Take permission for one call; finish or cancel the returned `Attempt`.

        Raises:
            BreakerOpen: open, forced open, no probe slot free, or Redis down
                under the ``fail_closed`` policy.
        """
        host = self._host
        host.check_open()
        decision = self._view.decide(
            time.monotonic(), redis_up=host.redis_health.reachable, settings=host.settings
        )
        gen = self._view.snapshot.gen
        if decision.verdict is Verdict.ADMIT:
            return Attempt(self, AttemptKind.RECORDED, gen)
        if decision.verdict is Verdict.ADMIT_UNRECORDED:
            return Attempt(self, AttemptKind.UNRECORDED, gen)
        if decision.verdict is Verdict.REFUSE:
            raise BreakerOpen(self.name, decision.retry_after)
        return await self._acquire_probe()

    async def _acquire_probe(self) -> Attempt:
        host = self._host
        lease_id = secrets.token_hex(8)
        try:
            reply = await host.scripts.acquire(self.name, lease_id)
        except BackendUnavailable as exc:
            host.redis_health.failed(exc)
            if host.settings.redis_down_policy == "fail_closed":
                retry = host.settings.staleness_bound.total_seconds() / 2
                raise BreakerOpen(self.name, retry) from exc
            return Attempt(self, AttemptKind.UNRECORDED, self._view.snapshot.gen)
        host.redis_health.ok()
        host.apply(reply.snapshot)
        gen = reply.snapshot.gen
        if reply.verdict == "probe":
            return Attempt(self, AttemptKind.PROBE, gen, lease_id)
        if reply.verdict == "allowed":
            recorded = reply.snapshot.state is BreakerState.CLOSED
            return Attempt(self, AttemptKind.RECORDED if recorded else AttemptKind.UNRECORDED, gen)
        retry = self._retry_after(reply.retry_after_ms)
        # Cache the refusal, but never past the poll interval: a slot may free up earlier.
        poll = host.settings.staleness_bound.total_seconds() / 2
        self._view.refuse_until(time.monotonic() + min(retry, poll))
        raise BreakerOpen(self.name, retry)

    def _retry_after(self, retry_ms: int) -> float:
        if retry_ms < 0:
            return self._host.settings.open_duration.total_seconds()
        return retry_ms / 1000

    async def _finish(self, attempt: Attempt, outcome: Outcome, duration: float) -> None:
        host = self._host
        slow = is_slow(duration, host.settings)
        if attempt.kind is AttemptKind.UNRECORDED:
            return
        if attempt.kind is AttemptKind.RECORDED:
            if outcome is not Outcome.IGNORED:
                await host.record(
                    self.name, attempt.gen, failure=outcome is Outcome.FAILURE, slow=slow
                )
            return
        if outcome is Outcome.IGNORED:
            await self._return_lease(attempt)
            return
        # A slow probe is no evidence of recovery.
        final = Outcome.FAILURE if slow else outcome
        await self._probe_done(attempt, final)

    async def _probe_done(self, attempt: Attempt, outcome: Outcome | Literal["cancel"]) -> None:
        host = self._host
        assert attempt.lease_id is not None
        try:
            verdict, snapshot = await host.scripts.probe_done(self.name, attempt.lease_id, outcome)
        except BackendUnavailable as exc:
            host.redis_health.failed(exc)
            logger.debug("probe of %s not recorded; its lease lapses", self.name, exc_info=True)
            return
        host.redis_health.ok()
        host.apply(snapshot)
        if verdict == "lost":
            logger.info("probe of %s ended after its lease was reclaimed; not counted", self.name)

    async def _return_lease(self, attempt: Attempt) -> None:
        # Shielded: a second cancellation must not leave the lease held until its deadline.
        task = self._host.spawn(self._probe_done(attempt, "cancel"))
        await asyncio.shield(task)
