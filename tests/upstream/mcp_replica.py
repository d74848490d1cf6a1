"""Another replica process: one MCP tool call through its own pool and fleet breakers.

``python -m tests.upstream.mcp_replica SETTINGS_JSON SESSION_ID SERVERS_JSON
FALLBACKS_JSON SERVER TOOL`` prints ``{"upstream": ..., "skipped": [...], "value": ...}``
or ``{"error": <type>, "reason": ..., "message": ...}`` as one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from sessionstore import SessionStore, Settings, create_client
from sessionstore.breaker import BreakerRegistry
from sessionstore.exceptions import SessionStoreError
from sessionstore.upstream import BreakerGates, McpServers, UpstreamPool, credentials_for
from sessionstore.upstream.mcp import McpConnector


async def call(argv: list[str]) -> dict[str, Any]:
    """Run the call described by `argv` (see the module docstring)."""
    fields, session_id, servers_json, fallbacks_json, server, tool = argv
    settings = Settings(**json.loads(fields))
    redis = create_client(settings.store_redis(settings.redis_url or ""))
    store = SessionStore(redis, settings.session)
    upstream = settings.upstream
    registry = BreakerRegistry(redis, settings.breaker, key_prefix=settings.session.key_prefix)
    try:
        async with (
            registry,
            UpstreamPool(
                store,
                connectors=[McpConnector.from_settings(upstream)],
                credentials=credentials_for(settings, {}),
                settings=upstream,
                gates=BreakerGates(registry),
                maintain_every=None,
            ) as pool,
        ):
            servers = McpServers(
                pool, session_id, json.loads(servers_json), fallbacks=json.loads(fallbacks_json)
            )
            try:
                served = await servers.call_tool(server, tool)
            except SessionStoreError as exc:
                return {
                    "error": type(exc).__name__,
                    "reason": getattr(exc, "reason", None),
                    "message": str(exc),
                }
            return {
                "upstream": served.upstream,
                "skipped": [list(s) for s in served.skipped],
                "value": served.value.structured_content,
            }
    finally:
        await redis.aclose()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(call(sys.argv[1:]))))
