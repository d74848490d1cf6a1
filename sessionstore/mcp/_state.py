"""Per-session state for tools: `mcp_session()` inside any tool, resource or prompt handler.

The roaming manager binds the request's session (as read in the same round
trip that took the request's lease) to a context variable before the SDK
dispatches the request; the SDK carries the sender's context to the handler.
Attributes live in the session's record, one field each, so every replica sees
them; writes are compare-and-set on the record's version, retried on conflict,
so concurrent increments from many replicas are never lost.
"""

from __future__ import annotations

import asyncio
import inspect
import random
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar, Token
from typing import Any

from .. import Session, SessionStore
from ..exceptions import VersionConflict

#: `fn` of `McpSession.mutate`: gets a copy of the state, returns the new one (or
#: changes the copy and returns None); may run several times.
StateMutator = Callable[
    [dict[str, Any]], "dict[str, Any] | Awaitable[dict[str, Any] | None] | None"
]

_current: ContextVar[McpSession | None] = ContextVar("sessionstore_mcp_session", default=None)


class McpSession:
    """The MCP session a request belongs to, and its attributes in Redis.

    Reads answer from the session as read when the request began (no round
    trip), updated by this request's own writes; `refresh` reads it again.

    .. versionadded:: 0.1
    """

    def __init__(self, store: SessionStore, session: Session) -> None:
        self._store = store
        self._session = session

    @property
    def id(self) -> str:
        """The session id (the client's ``Mcp-Session-Id``)."""
        return self._session.id

    @property
    def state(self) -> dict[str, Any]:
        """A copy of every attribute."""
        return dict(self._session.state)

    async def refresh(self) -> None:
        """Read the session again (one round trip)."""
        self._session = await self._store.get(self.id)

    def get(self, name: str, default: Any = None) -> Any:
        """The attribute `name`, or `default`."""
        return self._session.state.get(name, default)

    async def set(self, name: str, value: Any) -> None:
        """Set one attribute (one round trip; other attributes are not rewritten)."""
        await self.update({name: value})

    async def update(self, values: Mapping[str, Any]) -> None:
        """Set several attributes in one atomic write."""
        version = await self._store.set_state(self.id, values)
        self._adopt({**self._session.state, **values}, version)

    async def delete(self, *names: str) -> None:
        """Remove attributes (absent ones are ignored)."""
        version = await self._store.set_state(self.id, delete=names)
        self._adopt({k: v for k, v in self._session.state.items() if k not in names}, version)

    async def mutate(self, fn: StateMutator) -> dict[str, Any]:
        """Read-modify-write with compare-and-set, retried on conflict; returns the new state.

        The first attempt starts from the session as this request knows it (one
        round trip when nobody wrote in between).

        Raises:
            VersionConflict: still conflicting after ``mutate_max_attempts`` tries.
        """
        attempts = self._store.settings.mutate_max_attempts
        session = self._session
        for attempt in range(attempts):
            working = dict(session.state)
            result = fn(working)
            if inspect.isawaitable(result):
                result = await result
            new_state = working if result is None else dict(result)
            sets = {k: v for k, v in new_state.items() if session.state.get(k, _MISSING) != v}
            deletes = [k for k in session.state if k not in new_state]
            if not sets and not deletes:
                return new_state
            try:
                version = await self._store.set_state(
                    self.id, sets, delete=deletes, expected_version=session.version
                )
            except VersionConflict:
                if attempt == attempts - 1:
                    raise
                # Full jitter, growing to 50 ms, so colliding writers spread apart.
                await asyncio.sleep(random.uniform(0, min(0.05, 0.001 * 2**attempt)))
                session = await self._store.get(self.id)
                continue
            self._session = session
            self._adopt(new_state, version)
            return new_state
        raise AssertionError("unreachable")  # pragma: no cover

    async def incr(self, name: str, by: int = 1) -> int:
        """Add `by` to the integer attribute `name` (absent counts as 0); returns the new value."""

        def add(state: dict[str, Any]) -> None:
            state[name] = int(state.get(name, 0)) + by

        return int((await self.mutate(add))[name])

    def _adopt(self, state: dict[str, Any], version: int) -> None:
        self._session = self._session.model_copy(update={"state": state, "version": version})


_MISSING = object()


def mcp_session() -> McpSession:
    """The MCP session of the request being handled.

    Raises:
        RuntimeError: called outside a request served by `mcp_app`.

    .. versionadded:: 0.1
    """
    session = _current.get()
    if session is None:
        raise RuntimeError("mcp_session() is only available while mcp_app serves a request")
    return session


def bind(session: McpSession) -> Token[McpSession | None]:
    """Make `session` the current one for this task and the handlers it dispatches."""
    return _current.set(session)


def unbind(token: Token[McpSession | None]) -> None:
    """Undo `bind`."""
    _current.reset(token)
