"""Upstream connection records in Redis, next to their session.

Each record is one JSON field of the session's upstreams hash
(``<prefix>:{N}:upstreams:<session id>``, field = upstream name), so an
operator reads it with ``redis-cli HGET`` and the session's end, sweep and
rotate scripts take it along. Every write is the one ``lua/upstream.lua``
script: Redis time, refused for an ended session, one round trip.

The spec (with its connector options) is the record's last field and the
script keeps its text as sent, never re-encoding it: options come back exactly
as given (Lua's cjson would round numbers to 14 digits). Non-finite numbers
are refused here, before the script.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

from .._scripts import Arg, ScriptLibrary, call
from .._time import from_ms, ms_to_datetime
from ..exceptions import InvalidInput, UpstreamError, UpstreamNotFound
from ..store._replies import raise_refusal
from ._connector import MAX_ERROR_CHARS
from ._spec import StoredCredential, UpstreamSpec

if TYPE_CHECKING:
    from ..store import SessionStore

#: ``upstream/lua/``: the record script.
_scripts = ScriptLibrary("sessionstore.upstream")


class UpstreamState(StrEnum):
    """Where an upstream connection stands, fleet-wide.

    .. versionadded:: 0.1
    """

    #: The last call, probe or reconnect succeeded.
    CONNECTED = "connected"
    #: Calls are failing; a reconnect job is scheduled (``next_attempt_at``).
    RECONNECTING = "reconnecting"
    #: Given up: bad credentials, or the reconnect attempts are spent.
    FAILED = "failed"
    #: Closed on purpose; the next use opens it again.
    CLOSED = "closed"


class UpstreamRecord(BaseModel):
    """One upstream connection's record as stored in Redis (no secrets in it).

    .. versionadded:: 0.1
    """

    model_config = ConfigDict(frozen=True)

    spec: UpstreamSpec
    #: None for an upstream that needs no secret (an MCP server without a token).
    credential: StoredCredential | None = None
    state: UpstreamState
    registered_at: datetime
    updated_at: datetime
    last_success: datetime | None = None
    #: Classifier label and message of the last failure (secrets redacted).
    last_error: str | None = None
    last_error_at: datetime | None = None
    #: Failed attempts since the last success (calls and reconnect jobs).
    attempts: int = 0
    #: When the scheduled reconnect job runs (None: none scheduled).
    next_attempt_at: datetime | None = None
    #: Round trip of the last health check (NOOP), in milliseconds.
    response_time_ms: float | None = None
    checked_at: datetime | None = None
    #: What another process needs to continue the upstream's own session (MCP over
    #: Streamable HTTP: session id, protocol version, initialize result); never a secret.
    resume: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        """The upstream's name within its session."""
        return self.spec.name

    @classmethod
    def from_json(cls, raw: str) -> UpstreamRecord:
        """Parse a record as the script stores it (times in epoch ms)."""
        data: dict[str, Any] = json.loads(raw)
        for field in ("registered_at", "updated_at"):
            data[field] = ms_to_datetime(data[field])
        for field in ("last_success", "last_error_at", "next_attempt_at", "checked_at"):
            data[field] = from_ms(data.get(field))
        return cls.model_validate(data)


AttemptsChange = Literal["incr", "reset"]


def _encode(fields: dict[str, Any]) -> str:
    try:
        return json.dumps(fields, separators=(",", ":"), allow_nan=False)
    except ValueError as exc:
        raise InvalidInput("upstream options must be finite numbers, strings or booleans") from exc


def _ms(delta: timedelta) -> int:
    return max(0, int(delta.total_seconds() * 1000))


class UpstreamRecords:
    """Register, update, read and remove the upstream records of sessions.

    Args:
        store: the session store (its client, keys and settings are used).
        max_per_session: upstream records one session may hold.

    .. versionadded:: 0.1
    """

    def __init__(self, store: SessionStore, *, max_per_session: int = 16) -> None:
        self.store = store
        self.max_per_session = max_per_session

    async def register(
        self, session_id: str, spec: UpstreamSpec, credential: StoredCredential | None
    ) -> UpstreamRecord:
        """Create or replace the record of ``spec.name`` (state ``closed``, no attempts).

        Raises:
            InvalidInput: the session already holds `max_per_session` records.
            SessionGone / SessionNotFound: the session cannot be used.
        """
        fields = {
            "credential": None
            if credential is None
            else credential.model_dump(mode="json", exclude_none=True),
            "state": UpstreamState.CLOSED.value,
            # Last: the script keeps this text as it is (see the module docstring).
            "spec": spec.model_dump(mode="json"),
        }
        return await self._write(session_id, "register", spec.name, fields)

    async def update(
        self,
        session_id: str,
        name: str,
        *,
        state: UpstreamState | None = None,
        success: bool = False,
        error: str | None = None,
        attempts: AttemptsChange | None = None,
        next_attempt_in: timedelta | None = None,
        clear_next_attempt: bool = False,
        response_time_ms: float | None = None,
        resume: dict[str, Any] | Literal["keep"] | None = "keep",
        only_states: tuple[UpstreamState, ...] = (),
    ) -> UpstreamRecord:
        """Change a record; times are stamped with Redis time. One round trip.

        Args:
            state: the new state.
            success: stamp ``last_success`` now (and clear ``last_error``).
            error: stamp ``last_error_at`` now with this text (cut, no secrets).
            attempts: ``incr`` or ``reset`` the failed-attempt count.
            next_attempt_in: schedule ``next_attempt_at`` this far from now.
            clear_next_attempt: no reconnect is scheduled any more.
            response_time_ms: a health check's round trip (stamps ``checked_at``).
            resume: the upstream session's resume state (None clears it).
            only_states: write only if the current state is one of these.

        Raises:
            UpstreamError: no record of that name, or its state is not in `only_states`.
            SessionGone / SessionNotFound: the session cannot be used.
        """
        fields: dict[str, Any] = {}
        stamps = []
        if state is not None:
            fields["state"] = state.value
        if success:
            fields["last_error"] = None
            stamps.append("last_success")
        if error is not None:
            fields["last_error"] = error[:MAX_ERROR_CHARS]
            stamps.append("last_error_at")
        if response_time_ms is not None:
            fields["response_time_ms"] = round(response_time_ms, 3)
            stamps.append("checked_at")
        if resume != "keep":
            fields["resume"] = resume
        nxt = "clear" if clear_next_attempt else ""
        if next_attempt_in is not None:
            nxt = str(_ms(next_attempt_in))
        only = ",".join(s.value for s in only_states)
        return await self._write(
            session_id, "update", name, fields, ",".join(stamps), attempts or "", nxt, only
        )

    async def remove(self, session_id: str, name: str) -> bool:
        """Delete the record of `name`; False if there was none.

        Raises:
            SessionGone / SessionNotFound: the session cannot be used.
        """
        try:
            await self._write(session_id, "remove", name, {})
        except UpstreamError:
            return False
        return True

    async def get(self, session_id: str, name: str) -> UpstreamRecord | None:
        """The record of `name`, or None (never registered, or the session ended)."""
        keys = self.store.keys.session(session_id)
        raw = await self._read("HGET", keys.upstreams, name)
        return None if raw is None else UpstreamRecord.from_json(str(raw))

    async def list(self, session_id: str) -> dict[str, UpstreamRecord]:
        """Every record of the session by name (empty once the session ended)."""
        keys = self.store.keys.session(session_id)
        raw = await self._read("HGETALL", keys.upstreams)
        return {str(n): UpstreamRecord.from_json(str(v)) for n, v in dict(raw).items()}

    async def _read(self, *command: str) -> Any:
        from .._redis import backend_errors

        with backend_errors(f"upstream records {command[0]}"):
            return await self.store.redis.execute_command(*command)

    async def _write(
        self,
        session_id: str,
        op: str,
        name: str,
        fields: dict[str, Any],
        stamp: str = "",
        attempts: str = "",
        next_in: str = "",
        only_states: str = "",
    ) -> UpstreamRecord:
        keys = self.store.keys.session(session_id)
        cfg = self.store.settings
        args: list[Arg] = [
            session_id,
            op,
            name,
            _ms(cfg.sweep_grace),
            cfg.events_maxlen,
            self.max_per_session,
            _encode(fields),
            stamp,
            attempts,
            next_in,
            only_states,
        ]
        reply = await call(self.store.redis, _scripts("upstream"), keys.ordered(), args)
        kind = reply[0]
        if kind == "ok":
            return UpstreamRecord.from_json(str(reply[2]))
        if kind == "unknown":
            raise UpstreamNotFound(name, f"no upstream {name!r} registered for this session")
        if kind == "state":
            raise UpstreamError(name, f"record is {reply[1]}, not one of {only_states}")
        if kind == "too_many":
            raise InvalidInput(
                f"session {session_id} already has {reply[1]} upstream records "
                f"(limit {self.max_per_session})"
            )
        raise_refusal(session_id, reply)
