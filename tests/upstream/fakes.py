"""Fakes for pool logic: a scripted connector, a controllable breaker, a job recorder.

Only the edges are fake (the upstream and the breaker); records live in a real Redis.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretStr

from sessionstore.breaker import Outcome
from sessionstore.exceptions import BreakerOpen
from sessionstore.upstream import UpstreamSpec


@dataclass(eq=False)
class FakeConnection:
    """A connection the test can kill."""

    number: int
    spec: UpstreamSpec
    alive: bool = True
    closed: bool = False


@dataclass
class FakeConnector:
    """Connects instantly; `connect_faults` and `probe_faults` are raised in order."""

    kind: str = "fake"
    connect_faults: list[BaseException] = field(default_factory=list)
    probe_faults: list[BaseException] = field(default_factory=list)
    connections: list[FakeConnection] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)
    probes: int = 0
    bad_results: set[object] = field(default_factory=set)

    async def connect(self, spec: UpstreamSpec, secret: SecretStr) -> FakeConnection:
        self.secrets.append(secret.get_secret_value())
        if self.connect_faults:
            raise self.connect_faults.pop(0)
        conn = FakeConnection(len(self.connections) + 1, spec)
        self.connections.append(conn)
        return conn

    async def probe(self, connection: FakeConnection) -> None:
        self.probes += 1
        if self.probe_faults:
            raise self.probe_faults.pop(0)

    async def close(self, connection: FakeConnection) -> None:
        connection.closed = True
        connection.alive = False

    def result_fault(self, value: object) -> Exception | None:
        if value in self.bad_results:
            from sessionstore.upstream import ReplyError

            return ReplyError("FAKE", "NO", "[NONEXISTENT] no such thing")
        return None

    def redact(self, text: str, secret: SecretStr | None) -> str:
        return text if secret is None else text.replace(secret.get_secret_value(), "***")

    @property
    def opened(self) -> int:
        return len(self.connections)


def failing(*faults: BaseException, then: object = "ok") -> Callable[[Any], Any]:
    """An operation that raises `faults` one per call, then returns `then`."""
    pending = list(faults)

    async def op(conn: FakeConnection) -> object:
        if pending:
            raise pending.pop(0)
        return then

    return op


@dataclass
class FakeTicket:
    gate: FakeGate
    is_probe: bool = False

    async def finish(self, outcome: Outcome) -> None:
        self.gate.outcomes.append(outcome)

    async def cancel(self) -> None:
        self.gate.outcomes.append("cancelled")


@dataclass
class FakeGate:
    """A breaker whose state the test sets: closed, open (refuses) or half-open."""

    state: str = "closed"
    wait: float = 7.0
    outcomes: list[object] = field(default_factory=list)
    admitted: int = 0

    @property
    def lets_callers_through(self) -> bool:
        return self.state == "closed"

    def retry_after(self) -> float:
        return 0.0 if self.state == "closed" else self.wait

    async def admit(self) -> FakeTicket:
        if self.state == "open":
            raise BreakerOpen("fake", self.wait)
        self.admitted += 1
        return FakeTicket(self, is_probe=self.state == "half_open")


@dataclass
class FakeGates:
    gates: dict[str, FakeGate] = field(default_factory=dict)

    async def gate(self, name: str) -> FakeGate:
        return self.gates.setdefault(name, FakeGate())


@dataclass
class RecordedJobs:
    """A ReconnectScheduler that records what was asked."""

    asked: list[tuple[str, str, float]] = field(default_factory=list)

    async def schedule(self, session_id: str, upstream: str, *, delay: float) -> bool:
        self.asked.append((session_id, upstream, delay))
        return True


class FakeClock:
    """Monotonic seconds the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def spec(name: str = "mail", host: str = "primary.example.com") -> UpstreamSpec:
    """A fake upstream spec."""
    return UpstreamSpec(name=name, kind="fake", host=host, port=993, username="alice")
