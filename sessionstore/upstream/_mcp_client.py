"""`McpServers`: a session's MCP servers by name, in the spirit of ``MultiServerMCPClient``.

It takes the same connection dicts as langchain-mcp-adapters'
``MultiServerMCPClient`` (``{"transport": "stdio", "command": ..., "args":
[...]}``, ``{"transport": "streamable_http", "url": ...}``) with the same
errors, registers them as upstreams of one session, and runs every request
through the pool: pooled connections, retry, the fleet's breakers, fallback
servers, records in Redis. This module does not import the MCP SDK: the
connections it receives come from `sessionstore.upstream.mcp.McpConnector`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from ..exceptions import InvalidInput
from ._connector import Served
from ._mcp_target import McpTarget
from ._records import UpstreamRecord
from ._spec import UpstreamSpec

if TYPE_CHECKING:
    from ._pool import UpstreamPool


class McpServers:
    """The MCP servers of one session, each request run through the pool.

    Args:
        pool: the process's `UpstreamPool` (with an `McpConnector`).
        session_id: the session the servers belong to.
        connections: server name -> connection dict (``transport``, ``url`` or
            ``command`` + ``args``, optional ``env``, ``cwd``, ``headers``).
        fallbacks: server name -> servers tried in order when it is unavailable
            (breaker open or attempts spent); an operation's own ``fallbacks=``
            wins.

    Raises:
        InvalidInput: a connection dict without a transport, with an unknown
            one, or without its url, command or args; a fallback that is not a
            server of this client.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        pool: UpstreamPool,
        session_id: str,
        connections: Mapping[str, Mapping[str, Any]],
        *,
        fallbacks: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.pool = pool
        self.session_id = session_id
        self.specs = {
            name: UpstreamSpec(name=name, kind="mcp", mcp=McpTarget.from_connection(conn))
            for name, conn in connections.items()
        }
        self.fallbacks = {name: tuple(names) for name, names in (fallbacks or {}).items()}
        for name, names in self.fallbacks.items():
            for server in (name, *names):
                self._check(server)

    def _check(self, server: str) -> None:
        if server not in self.specs:
            raise InvalidInput(
                f"Couldn't find a server with name '{server}', expected one of '{list(self.specs)}'"
            )

    async def register(
        self,
        *,
        secrets: Mapping[str, SecretStr] | None = None,
        credential_refs: Mapping[str, str] | None = None,
    ) -> dict[str, UpstreamRecord]:
        """Register every server as an upstream of the session (one round trip each).

        Args:
            secrets: server name -> bearer token or JSON headers (HTTP) or JSON
                environment (stdio), sealed before it reaches Redis.
            credential_refs: server name -> ``env:NAME`` / ``file:NAME`` reference.
        """
        secrets, refs = secrets or {}, credential_refs or {}
        for server in (*secrets, *refs):
            self._check(server)
        return {
            name: await self.pool.register(
                self.session_id, spec, secret=secrets.get(name), credential_ref=refs.get(name)
            )
            for name, spec in self.specs.items()
        }

    async def _run(
        self, server: str, label: str, op: Any, fallbacks: Sequence[str] | None
    ) -> Served[Any]:
        self._check(server)
        chosen = self.fallbacks.get(server, ()) if fallbacks is None else tuple(fallbacks)
        for name in chosen:
            self._check(name)
        return await self.pool.run(self.session_id, server, op, fallbacks=chosen, label=label)

    async def call_tool(
        self,
        server: str,
        name: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        fallbacks: Sequence[str] | None = None,
    ) -> Served[Any]:
        """``tools/call``; `Served` says which server answered. A tool error is the
        result's ``is_error``, not an exception.

        Only a read-only or idempotent tool (by its annotations), or a request
        that provably never reached the server, is sent again after a failure.
        """
        return await self._run(
            server, f"tools/call {name}", lambda c: c.call_tool(name, arguments), fallbacks
        )

    async def list_tools(
        self, server: str, *, fallbacks: Sequence[str] | None = None
    ) -> Served[Any]:
        """``tools/list``."""
        return await self._run(server, "tools/list", lambda c: c.list_tools(), fallbacks)

    async def read_resource(
        self, server: str, uri: str, *, fallbacks: Sequence[str] | None = None
    ) -> Served[Any]:
        """``resources/read``."""
        return await self._run(server, "resources/read", lambda c: c.read_resource(uri), fallbacks)

    async def get_prompt(
        self,
        server: str,
        name: str,
        arguments: Mapping[str, str] | None = None,
        *,
        fallbacks: Sequence[str] | None = None,
    ) -> Served[Any]:
        """``prompts/get``."""
        return await self._run(
            server, "prompts/get", lambda c: c.get_prompt(name, arguments), fallbacks
        )

    async def health(self, server: str) -> dict[str, Any]:
        """One server's health: a ping (``server/discover`` on a 2026-07-28 connection)
        through the pool (its round trip goes to the record).

        Returns:
            healthy, timestamp, url or command, response_time_ms, last_activity,
            error, error_count (failed attempts since the last success), state.
        """
        self._check(server)
        report = await self.pool.health(self.session_id, server)
        target = self.specs[server].mcp
        assert target is not None
        where = {"url": target.url} if target.url else {"command": target.address}
        return {
            "healthy": report.healthy,
            "timestamp": report.timestamp.isoformat(),
            **where,
            "response_time_ms": None
            if report.response_time_ms is None
            else round(report.response_time_ms, 2),
            "last_activity": report.last_activity.isoformat() if report.last_activity else None,
            "error": report.error,
            "error_count": report.error_count,
            "state": report.state,
        }

    async def health_all(self) -> dict[str, dict[str, Any]]:
        """`health` of every server, by name."""
        return {name: await self.health(name) for name in self.specs}

    async def close(self) -> None:
        """Close this process's connections to the servers (records turn ``closed``)."""
        for name in self.specs:
            await self.pool.release(self.session_id, name)
