"""The breaker state in Redis: the scripts, their arguments, and their replies.

Each method is one atomic script (``lua/breaker_*.lua``) or one batch of
them: one round trip on a single Redis, one per node on a cluster. Breaker
scripts get the prelude and ``lua/_breaker.lua`` prepended; the
index script only the common prelude. Nothing here keeps state of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from .._keys import KeySpace
from .._redis import RedisClient, backend_errors
from .._scripts import Arg, Batch, LuaScript, ScriptLibrary, call
from .._time import ms_to_datetime
from ..exceptions import SessionStoreError
from ..settings import BreakerSettings
from ._model import (
    AuditEntry,
    BreakerEvent,
    BreakerSnapshot,
    BreakerState,
    BreakerStatus,
    Outcome,
)
from ._policy import WindowCounts, bucket_ms, ms

ControlAction = Literal["force_open", "force_closed", "reset"]


#: ``breaker/lua/``: the breaker's scripts.
_scripts = ScriptLibrary("sessionstore.breaker")


def breaker_script(name: str) -> LuaScript:
    """``lua/breaker_<name>.lua`` (with the prelude and ``lua/_breaker.lua``)."""
    return _scripts(f"breaker_{name}")


@dataclass(frozen=True, slots=True)
class PendingRecord:
    """Outcomes of one breaker and generation, ready to be added to its window."""

    name: str
    gen: int
    counts: WindowCounts


@dataclass(frozen=True, slots=True)
class AcquireReply:
    """The answer of ``breaker_acquire``."""

    verdict: Literal["allowed", "probe", "refused"]
    snapshot: BreakerSnapshot
    #: For "refused": milliseconds until a retry may succeed (-1: forced open).
    retry_after_ms: int = 0


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _snapshot(raw: Any) -> BreakerSnapshot:
    return BreakerSnapshot.model_validate_json(_text(raw))


def _pairs(flat: list[Any]) -> list[tuple[str, int]]:
    return [(_text(flat[i]), int(float(flat[i + 1]))) for i in range(0, len(flat), 2)]


class BreakerScripts:
    """Calls the breaker scripts for one key space and one `BreakerSettings`.

    .. versionadded:: 0.1
    """

    def __init__(self, client: RedisClient, keys: KeySpace, settings: BreakerSettings) -> None:
        self.client = client
        self.keys = keys
        self.settings = settings
        self.channel = keys.breaker_channel()
        self._retention_ms = ms(settings.retention)
        self._open_ms = ms(settings.open_duration)
        self._bucket_ms = bucket_ms(settings)
        slow_rate = settings.slow_call_rate_threshold if settings.slow_call_duration else 0.0
        # repr() of a float round-trips exactly, so Lua compares the same double.
        self._rule: list[Arg] = [
            settings.minimum_calls,
            repr(settings.failure_rate_threshold),
            repr(slow_rate),
            self._bucket_ms,
            settings.window_buckets,
        ]

    def _common(self, name: str) -> tuple[list[str], list[Arg]]:
        keys = self.keys.breaker(name).ordered()
        args: list[Arg] = [
            name,
            self.channel,
            self.settings.events_maxlen,
            self._retention_ms,
            self._open_ms,
        ]
        return keys, args

    # -- reads -------------------------------------------------------------------

    def queue_read(self, batch: Batch, name: str) -> int:
        """Queue ``breaker_read`` for `name`; returns its index in the batch reply."""
        keys, args = self._common(name)
        return batch.script(
            breaker_script("read"), keys, [*args, self._bucket_ms, self.settings.window_buckets]
        )

    def queue_index(self, batch: Batch, names: list[str]) -> int:
        """Queue ``breaker_index`` (note `names` as used now; prune old names)."""
        return batch.script(
            breaker_script("index"), [self.keys.breaker_index()], [self._retention_ms, *names]
        )

    async def read_many(self, names: list[str]) -> dict[str, BreakerStatus]:
        """The status of each of `names` in one batch (one round trip per node)."""
        if not names:
            return {}
        batch = Batch(self.client)
        slots = {name: self.queue_read(batch, name) for name in names}
        replies = await batch.execute()
        return {
            name: BreakerStatus.model_validate_json(_text(replies[i])) for name, i in slots.items()
        }

    async def read(self, name: str) -> BreakerStatus:
        """One breaker's status (state, window totals, live probes): one round trip."""
        return (await self.read_many([name]))[name]

    async def names(self) -> list[tuple[str, int]]:
        """Known breaker names with their last use (epoch ms), old ones pruned."""
        return await self.touch_index([])

    async def touch_index(self, names: list[str]) -> list[tuple[str, int]]:
        """Note `names` as used now in the fleet-wide index; returns every known name.

        The index has a slot of its own (on a cluster, maybe another node): callers
        keep it apart from a breaker's own scripts, so that an index outage never
        fails a breaker operation.
        """
        batch = Batch(self.client)
        self.queue_index(batch, names)
        return _pairs((await batch.execute())[0])

    async def events(self, name: str, count: int) -> list[BreakerEvent]:
        """The newest `count` entries of the breaker's event stream, newest first."""
        key = self.keys.breaker(name).events
        with backend_errors("breaker events"):
            entries = await self.client.xrevrange(key, count=count)
        result = []
        for entry_id, raw in entries:
            fields = {_text(k): _text(v) for k, v in raw.items()}
            kind = fields.pop("kind", "")
            at = ms_to_datetime(fields.pop("at", 0))
            fields.pop("name", None)
            result.append(BreakerEvent(id=_text(entry_id), kind=kind, at=at, fields=fields))
        return result

    async def audit(self, name: str, count: int) -> list[AuditEntry]:
        """The newest `count` manual actions on the breaker, newest first."""
        key = self.keys.breaker(name).audit
        with backend_errors("breaker audit"):
            entries = await self.client.xrevrange(key, count=count)
        result = []
        for entry_id, raw in entries:
            f = {_text(k): _text(v) for k, v in raw.items()}
            at = ms_to_datetime(f["at"])
            result.append(
                AuditEntry(
                    id=_text(entry_id),
                    action=f["action"],
                    actor=f["actor"],
                    reason=f["reason"],
                    at=at,
                    from_state=BreakerState(f["from"]),
                    to_state=BreakerState(f["to"]),
                    gen=int(f["gen"]),
                )
            )
        return result

    # -- transitions ---------------------------------------------------------------

    def _record_call(self, item: PendingRecord) -> tuple[list[str], list[Arg]]:
        keys, args = self._common(item.name)
        counts = item.counts
        return keys, [*args, item.gen, counts.calls, counts.failures, counts.slow, *self._rule]

    async def record(self, item: PendingRecord) -> tuple[str, BreakerSnapshot]:
        """Add outcomes to the window (maybe tripping it): one round trip.

        Returns ``("counted" | "ignored", snapshot after)``.
        """
        keys, args = self._record_call(item)
        reply = await call(self.client, breaker_script("record"), keys, args)
        return _text(reply[0]), _snapshot(reply[1])

    async def record_many(self, items: list[PendingRecord]) -> list[tuple[str, BreakerSnapshot]]:
        """`record` for several breakers in one batch (one round trip per node)."""
        batch = Batch(self.client)
        for item in items:
            batch.script(breaker_script("record"), *self._record_call(item))
        replies = await batch.execute()
        return [(_text(r[0]), _snapshot(r[1])) for r in replies]

    async def acquire(self, name: str, lease_id: str) -> AcquireReply:
        """Permission for a call past an open period or in half-open: one round trip."""
        keys, args = self._common(name)
        lease_ms = ms(self.settings.probe_lease_ttl)
        reply = await call(
            self.client,
            breaker_script("acquire"),
            keys,
            [*args, lease_id, lease_ms, self.settings.half_open_probes],
        )
        verdict = _text(reply[0])
        if verdict not in ("allowed", "probe", "refused"):
            raise SessionStoreError(f"unexpected breaker_acquire reply {verdict!r}")
        retry = int(reply[2]) if len(reply) > 2 else 0
        return AcquireReply(verdict, _snapshot(reply[1]), retry)  # type: ignore[arg-type]

    async def probe_done(
        self, name: str, lease_id: str, outcome: Outcome | Literal["cancel"]
    ) -> tuple[str, BreakerSnapshot]:
        """End a probe: success, failure or cancel. Returns ``(verdict, snapshot)``."""
        keys, args = self._common(name)
        reply = await call(
            self.client,
            breaker_script("probe_done"),
            keys,
            [*args, lease_id, str(outcome), self.settings.half_open_probes],
        )
        return _text(reply[0]), _snapshot(reply[1])

    async def control(
        self, name: str, action: ControlAction, actor: str, reason: str
    ) -> BreakerSnapshot:
        """An operator's action: one round trip (the caller notes the name in the index)."""
        keys, args = self._common(name)
        reply = await call(
            self.client,
            breaker_script("control"),
            keys,
            [*args, action, actor, reason, self.settings.audit_maxlen],
        )
        return _snapshot(reply)
