"""fastmcp on many replicas: its apps served by the roaming manager, its
``ctx.get_state`` / ``set_state`` kept in the roaming session.

fastmcp (4.x, on the same SDK) runs its tools on an SDK low-level server
(``FastMCP._mcp_server``, a private attribute: read by `fastmcp_server`, pinned
with the SDK range and tested) and keys ``ctx`` state by the connection's
session id, which under `RoamingSessionManager` is the sessionstore id. What it
lacks is a store every replica shares: its default ``session_state_store`` is in
process memory. `SessionStateStore` is a ``session_state_store`` (the
py-key-value ``AsyncKeyValue`` protocol) over the current request's session
attributes, so state set on one replica is read on the next.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any, SupportsFloat

from ._state import mcp_session

_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")
#: Prefix of the session attributes `SessionStateStore` writes.
ATTRIBUTE_PREFIX = "fastmcp:"


def fastmcp_server(server: Any) -> Any:
    """The SDK low-level server a ``FastMCP`` app runs its handlers on."""
    lowlevel = getattr(server, "_mcp_server", None)
    if lowlevel is None:
        raise TypeError(f"not a FastMCP server: {type(server).__name__}")
    return lowlevel


def _attribute(key: str, collection: str | None) -> str | None:
    """The session attribute for fastmcp's key ``<session id>:<name>``, or None when the
    key names another session than the request's."""
    session = mcp_session()
    prefix = f"{session.id}:"
    if not key.startswith(prefix):
        return None
    name = f"{collection or ''}/{key.removeprefix(prefix)}"
    if _NAME.fullmatch(name.replace("/", ".")):
        return ATTRIBUTE_PREFIX + name.replace("/", ".")
    # Names outside the attribute alphabet are kept under a digest of themselves.
    return ATTRIBUTE_PREFIX + "h." + hashlib.sha256(name.encode()).hexdigest()[:40]


class SessionStateStore:
    """fastmcp's ``session_state_store`` over the roaming session's attributes.

    Pass it as ``FastMCP(..., session_state_store=SessionStateStore())`` and serve
    the app with ``mcp_app``. Reads answer from the session as read when the
    request began (no round trip); each write is one. TTLs are not kept: the
    state lives and ends with the session (its idle and absolute lifetimes).
    A key of another session than the request's reads as absent and is never
    written.

    .. versionadded:: 0.1
    """

    async def get(self, key: str, *, collection: str | None = None) -> dict[str, Any] | None:
        """The value under `key`, or None."""
        name = _attribute(key, collection)
        value = mcp_session().get(name) if name else None
        return dict(value) if isinstance(value, Mapping) else None

    async def ttl(
        self, key: str, *, collection: str | None = None
    ) -> tuple[dict[str, Any] | None, float | None]:
        """The value and no TTL (the session's lifetime governs)."""
        return await self.get(key, collection=collection), None

    async def put(
        self,
        key: str,
        value: Mapping[str, Any],
        *,
        collection: str | None = None,
        ttl: SupportsFloat | None = None,
    ) -> None:
        """Store `value` under `key` in the session (one round trip)."""
        name = _attribute(key, collection)
        if name is None:
            raise ValueError("fastmcp state key of another session")
        await mcp_session().set(name, dict(value))

    async def delete(self, key: str, *, collection: str | None = None) -> bool:
        """Remove `key`; whether it was there."""
        name = _attribute(key, collection)
        session = mcp_session()
        if name is None or session.get(name) is None:
            return False
        await session.delete(name)
        return True

    async def get_many(
        self, keys: Sequence[str], *, collection: str | None = None
    ) -> list[dict[str, Any] | None]:
        """`get` for each key."""
        return [await self.get(k, collection=collection) for k in keys]

    async def ttl_many(
        self, keys: Sequence[str], *, collection: str | None = None
    ) -> list[tuple[dict[str, Any] | None, float | None]]:
        """`ttl` for each key."""
        return [await self.ttl(k, collection=collection) for k in keys]

    async def put_many(
        self,
        keys: Sequence[str],
        values: Sequence[Mapping[str, Any]],
        *,
        collection: str | None = None,
        ttl: SupportsFloat | None = None,
    ) -> None:
        """`put` for each key and value."""
        for k, v in zip(keys, values, strict=True):
            await self.put(k, v, collection=collection)

    async def delete_many(self, keys: Sequence[str], *, collection: str | None = None) -> int:
        """`delete` for each key; how many were there."""
        return sum([await self.delete(k, collection=collection) for k in keys])
