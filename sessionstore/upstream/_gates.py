"""What the pool and the reconnect jobs need from a circuit breaker.

The fleet-wide breaker lives in `sessionstore.breaker`; `BreakerGates` adapts
its `BreakerRegistry` to the small `Gates` protocol below (its `Attempt` is a
`Ticket` as it is), so the pool can also run with no breaker at all
(`NoGates`) or with a fake in tests.

Half-open probes go through the reconnect jobs: the pool only calls through
a gate whose local view is closed (`Gate.lets_callers_through`, no I/O); when
the breaker is open or half-open, the pool refuses at once and leaves the
probing to the worker, so a recovering upstream sees a few probes, not a
storm of user requests.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from ..breaker import Breaker, BreakerRegistry, BreakerState, Outcome
from ._classify import Verdict, classify


def verdict_of(fault: BaseException, connector: Any = None) -> Verdict:
    """The connector's own verdict of `fault` (``connector.classify``), else the common one.

    A connector kind knows faults the common classifier cannot (MCP's JSON-RPC
    codes, its HTTP client's errors, whether a request was delivered).
    """
    own = getattr(connector, "classify", None)
    verdict = own(fault) if own is not None else None
    return verdict if isinstance(verdict, Verdict) else classify(fault)


async def settle(ticket: Ticket, fault: BaseException, connector: Any = None) -> Verdict:
    """Classify a failed call's fault and report it to the breaker; returns the verdict.

    A fault that says the upstream is unwell counts as a failure; any other
    is ignored (the upstream answered, or said nothing about its health).
    """
    verdict = verdict_of(fault, connector)
    await ticket.finish(Outcome.FAILURE if verdict.counts_against_breaker else Outcome.IGNORED)
    return verdict


@runtime_checkable
class Ticket(Protocol):
    """Permission for one call; finish it exactly once.

    .. versionadded:: 0.1
    """

    @property
    def is_probe(self) -> bool:
        """True when this call is one of the fleet's half-open probes."""
        ...

    async def finish(self, outcome: Outcome) -> None:
        """Report how the call ended."""
        ...

    async def cancel(self) -> None:
        """The call was cancelled: count nothing, give a probe lease back."""
        ...


@runtime_checkable
class Gate(Protocol):
    """One upstream's breaker.

    .. versionadded:: 0.1
    """

    @property
    def lets_callers_through(self) -> bool:
        """True when the local view is closed (or forced closed); no I/O."""
        ...

    def retry_after(self) -> float:
        """Seconds until the breaker may admit again (0 when unknown or closed)."""
        ...

    async def admit(self) -> Ticket:
        """Take permission for one call.

        Raises:
            BreakerOpen: refused (open, forced open, no probe slot left).
        """
        ...


@runtime_checkable
class Gates(Protocol):
    """The breakers of one process, by breaker name.

    .. versionadded:: 0.1
    """

    async def gate(self, name: str) -> Gate:
        """The gate of breaker `name`."""
        ...


class _FreeTicket:
    is_probe = False

    async def finish(self, outcome: Outcome) -> None:
        """Nothing to report to."""

    async def cancel(self) -> None:
        """Nothing to give back."""


class _OpenGate:
    lets_callers_through = True

    def retry_after(self) -> float:
        return 0.0

    async def admit(self) -> Ticket:
        return _FreeTicket()


class NoGates:
    """No circuit breaker: every call is admitted (single process, tests).

    .. versionadded:: 0.1
    """

    _gate = _OpenGate()

    async def gate(self, name: str) -> Gate:
        """The always-open gate."""
        return self._gate


class _BreakerGate:
    """`Gate` over one fleet breaker."""

    def __init__(self, breaker: Breaker, open_duration: float) -> None:
        self._breaker = breaker
        self._open_duration = open_duration

    @property
    def lets_callers_through(self) -> bool:
        return self._breaker.state in (BreakerState.CLOSED, BreakerState.FORCED_CLOSED)

    def retry_after(self) -> float:
        state = self._breaker.state
        if state is BreakerState.OPEN:
            # Measured at the snapshot's Redis time: an upper bound, late by at most the
            # view's age (the staleness bound).
            snapshot = self._breaker.snapshot
            return max(0.0, (snapshot.open_until_ms - snapshot.now_ms) / 1000)
        if state is BreakerState.FORCED_OPEN:
            return self._open_duration  # an operator decides; look again after a period
        return 0.0  # closed, or half-open: a probe may go now

    async def admit(self) -> Ticket:
        return await self._breaker.acquire()


class BreakerGates:
    """`Gates` on the fleet's circuit breakers (`sessionstore.breaker.BreakerRegistry`).

    The registry is opened and closed by its owner (a lifespan, a worker start-up).

    .. versionadded:: 0.1
    """

    def __init__(self, registry: BreakerRegistry) -> None:
        self._registry = registry
        self._open_duration = registry.settings.open_duration.total_seconds()

    async def gate(self, name: str) -> Gate:
        """The gate of breaker `name` (its first use reads its state: one round trip)."""
        return _BreakerGate(await self._registry.get(name), self._open_duration)
