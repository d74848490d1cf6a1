"""The SDK's local copy of one MCP session on this replica: its transport and server task.

Any replica can hold a copy of any session; the record in Redis is the
session. A copy is made by ``initialize`` (opened) or from the record
(adopted), and dropped when the session ends anywhere, when the SDK's idle
timeout reaps it, or when the replica stops; the next request rebuilds it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskStatus

from ._handshake import HandshakeRecord
from ._sdk import (
    Connection,
    EventStore,
    JSONRPCDispatcher,
    StreamableHTTPServerTransport,
    serve_connection,
)

logger = logging.getLogger("sessionstore.mcp")


@dataclass(eq=False)
class LocalSession:
    """One session's transport on this replica, and the connection its server task serves."""

    session_id: str
    transport: StreamableHTTPServerTransport
    connection: Connection | None = None
    #: The session's event store on this replica (None: not resumable).
    events: EventStore | None = None
    #: Why the server task ended (``idle``, ``ended``, ``crashed``...), once it has.
    ended: str | None = None
    done: anyio.Event = field(default_factory=anyio.Event)
    #: Server-initiated requests sent from this copy and not answered yet: request id to
    #: the stream entry that stored the request (answers are relayed after it).
    awaiting: dict[str, str] = field(default_factory=dict)
    #: Whether a task is relaying answers that landed on other replicas.
    relaying: bool = False
    #: Host and Origin of the latest request served here (relayed answers carry them).
    host_headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        """Whether a request handed to the transport now is served (not refused as ended).

        False until the server task has connected the transport (a concurrent request
        waits for the adoption under way instead: the transport fails requests that
        come before), and once the SDK's idle timeout has fired or the transport is
        terminated: such a copy is replaced rather than used, so the client never sees
        the reap.
        """
        idle = self.transport.idle_scope
        connected = self.connection is not None
        return (
            connected and self.usable_for_streams and not (idle is not None and idle.cancel_called)
        )

    @property
    def usable_for_streams(self) -> bool:
        """Whether streams served from this copy should go on (it was not dropped)."""
        return self.ended is None and not self.transport.is_terminated


async def serve_local(
    server: Any,
    lifespan_state: Any,
    local: LocalSession,
    record: HandshakeRecord | None,
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run `local`'s SDK server loop until its transport closes or the idle timeout fires.

    With `record` (an adopted session) the connection starts out initialized with
    the recorded protocol version and client params, as the opening replica's
    connection is after the handshake.
    """
    transport = local.transport
    reason = "closed"
    try:
        async with transport.connect() as (read_stream, write_stream):
            dispatcher: JSONRPCDispatcher[Any] = JSONRPCDispatcher(
                read_stream, write_stream, inline_methods=frozenset({"initialize"})
            )
            connection = Connection.for_loop(dispatcher, session_id=local.session_id)
            if record is not None:
                connection.client_params = record.client_params()
                connection.protocol_version = record.protocol_version
                connection.initialized.set()
            local.connection = connection
            task_status.started()
            idle = transport.idle_scope or anyio.CancelScope()
            with idle:
                await serve_connection(
                    server, dispatcher, connection=connection, lifespan_state=lifespan_state
                )
            if idle.cancelled_caught:
                reason = "idle"
    except Exception:
        reason = "crashed"
        logger.exception("local copy of MCP session %s crashed", local.session_id[:8])
    finally:
        local.ended = local.ended or reason
        if not transport.is_terminated:
            with anyio.CancelScope(shield=True):
                await transport.terminate()
        local.done.set()
