"""`RoamingSessionManager`: Streamable HTTP sessions that any replica serves.

The SDK's own manager keeps sessions in a dict and answers 404 on every other
replica. This one speaks the same wire (it drives the SDK's transport and
server loop), but the ``Mcp-Session-Id`` is a sessionstore session id and the
session is its record in Redis:

- ``initialize`` (POST without an id) creates the session with the handshake
  record in its metadata and answers through a fresh local transport;
- any other request takes the session's request lease (a GET stream: its
  connection lease), which checks the session, enforces the fleet's limits,
  slides the idle deadline and reads the record, all in one round trip; a
  replica without a local copy rebuilds it from that record, once per session
  however many requests race for it; the lease goes back just before the
  response's last body message (one more round trip);
- ``DELETE`` ends the session in the store; every replica drops its copy when
  the ``deleted`` event reaches it, as for ``expired`` and ``rotated``.

Unknown, ended, malformed or someone else's ids answer 404 (what MCP clients
answer with a new ``initialize``); Redis down answers a fast 503.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
from anyio.abc import TaskGroup
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser, authorization_context
from mcp.server.transport_security import (
    DEFAULT_MAX_REQUEST_BODY_SIZE,
    RequestBodyLimitMiddleware,
    TransportSecuritySettings,
)
from mcp_types import JSONRPCError, JSONRPCResponse, jsonrpc_message_adapter
from pydantic import ValidationError
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from .. import (
    EventFollower,
    EventKind,
    Lease,
    Session,
    SessionStore,
    TrackedFleetLease,
    TrackedLease,
)
from .._ids import short_id
from .._time import datetime_to_ms
from ..exceptions import InvalidInput, SessionGone, SessionNotFound, SessionStoreError
from ._event_store import CURRENT_REQUEST, RedisEventStore, RequestWrites, parse_event_id
from ._handshake import HandshakeRecord, OpeningRejected, read_initialize
from ._local import LocalSession, serve_local
from ._metrics import McpMetrics
from ._replies import error_response, expired_request_state, not_found, store_refusal
from ._request_state import CURRENT_ROUND, CallRound, CallSessions
from ._sdk import (
    GET_STREAM_KEY,
    HANDSHAKE_PROTOCOL_VERSIONS,
    LAST_EVENT_ID_HEADER,
    MCP_SESSION_ID_HEADER,
    StreamableHTTPServerTransport,
    handle_modern_request,
)
from ._state import McpSession, bind, unbind

logger = logging.getLogger("sessionstore.mcp")

_PROTOCOL_VERSION_HEADER = "mcp-protocol-version"
#: Headers the SDK's DNS-rebinding check reads, copied onto relayed answers.
_HOST_HEADERS = frozenset({b"host", b"origin"})
#: Session events after which no replica may keep a local copy.
_ENDING = frozenset({EventKind.DELETED, EventKind.EXPIRED, EventKind.ROTATED})


class RoamingSessionManager:
    """Serves the MCP Streamable HTTP endpoint of one replica, for sessions of the whole fleet.

    An ASGI app; enter `run` (in the app's lifespan) before serving.

    Args:
        server: the SDK's low-level `Server` (``MCPServer`` apps: see `mcp_app`).
        json_response: answer POSTs with one JSON body instead of an SSE stream.
        security_settings: the SDK's DNS-rebinding protection settings.
        retry_interval: SSE ``retry`` hint in milliseconds for resumable streams.
        idle_timeout: seconds a local copy may sit unused before the SDK reaps it
            (the session itself lives on in Redis; the next request rebuilds it).
        max_request_body_size: larger request bodies get 413 before anything else.
        resumable: keep every session's SSE events in its Redis stream
            (`RedisEventStore`), so streams resume on any replica and GET streams
            carry messages produced on any replica.
        max_events: each session's stream is capped near this many events.
        metrics: the counters to update.
        call_sessions: the 2026-07-28 call sessions named by request state
            (`fleet_request_state_security`); None: such requests have none.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        server: Any,
        *,
        json_response: bool = False,
        security_settings: TransportSecuritySettings | None = None,
        retry_interval: int | None = None,
        idle_timeout: float | None = 30 * 60,
        max_request_body_size: int = DEFAULT_MAX_REQUEST_BODY_SIZE,
        resumable: bool = True,
        max_events: int = 1000,
        metrics: McpMetrics | None = None,
        call_sessions: CallSessions | None = None,
    ) -> None:
        self.server = server
        self.json_response = json_response
        self.security_settings = security_settings
        self.retry_interval = retry_interval
        self.idle_timeout = idle_timeout
        self.metrics = metrics or McpMetrics()
        self.resumable = resumable
        self.max_events = max_events
        self._calls = call_sessions
        self._asgi = RequestBodyLimitMiddleware(self._handle, max_request_body_size)
        self._sessions: dict[str, LocalSession] = {}
        self._adopt_lock = anyio.Lock()
        self._store: SessionStore | None = None
        self._group: TaskGroup | None = None
        self._lifespan_state: Any = None

    @property
    def local_sessions(self) -> int:
        """How many sessions this replica holds a local copy of now."""
        return len(self._sessions)

    @contextlib.asynccontextmanager
    async def run(self, store: SessionStore) -> AsyncIterator[None]:
        """Serve with `store` until the block ends: the server's lifespan, the local
        copies' tasks and the session-event follower that drops ended sessions."""
        if self._store is not None:
            raise RuntimeError("RoamingSessionManager.run() is already running")
        async with (
            self.server.lifespan(self.server) as lifespan_state,
            anyio.create_task_group() as group,
        ):
            self._store, self._group, self._lifespan_state = store, group, lifespan_state
            group.start_soon(self._follow_session_events, store)
            try:
                yield
            finally:
                group.cancel_scope.cancel()
                self._sessions.clear()
                self.metrics.local_sessions.set(0)
                self._store = self._group = self._lifespan_state = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._asgi(scope, receive, send)

    # -- routing -----------------------------------------------------------------

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        store = self._store
        if store is None:
            raise RuntimeError("RoamingSessionManager.run() is not running")
        headers = Headers(scope=scope)
        version = headers.get(_PROTOCOL_VERSION_HEADER)
        if version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS:
            await self._serve_modern(store, scope, receive, send)
            return
        session_id = headers.get(MCP_SESSION_ID_HEADER)
        owner = _owner(scope)
        method = scope["method"]
        if session_id is None:
            if method == "POST":
                await self._open(store, owner, scope, receive, send)
            else:
                await error_response(400, "Bad Request: Missing session ID")(scope, receive, send)
            return
        if method == "DELETE":
            await self._end(store, session_id, owner, scope, receive, send)
        else:
            await self._serve(store, session_id, owner, scope, receive, send)

    # -- the 2026-07-28 revision -------------------------------------------------

    async def _serve_modern(
        self, store: SessionStore, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """A self-contained request (no session id), served by the SDK's single-exchange
        entry. A round whose request state names a call session holds that session's
        request lease (its limit and the fleet's) and gets `mcp_session()`; another
        request holds a fleet-wide lease under a global limit. A round that asks for
        input first gets its call session created before its answer leaves. A
        ``subscriptions/listen`` stream is a connection, not a request: it holds none."""
        if scope["method"] != "POST":
            await self._modern(scope, receive, send)  # the SDK answers 405
            return
        body, receive = await _buffer_body(receive)
        if _is_listen(body):
            await self._modern(scope, receive, send)
            return
        named = self._calls.session_named(body) if self._calls is not None else None
        current = CallRound(named, store.settings.shards)
        tracked: TrackedLease | TrackedFleetLease | None = None
        if named is not None:
            tracked = store.track_request(named, read_session=True)
        elif store.settings.max_requests_global > 0:
            tracked = store.track_fleet_request()
        session: Session | None = None
        if tracked is not None:
            try:
                entered = await tracked.__aenter__()
            except SessionStoreError as exc:
                ended = isinstance(exc, SessionGone | SessionNotFound | InvalidInput)
                refusal = expired_request_state() if named and ended else store_refusal(exc)
                await refusal(scope, receive, send)
                return
            session = entered.session if isinstance(entered, Lease) else None
        returning = _LeaseReturn(tracked, named, RequestWrites(0)) if tracked else None
        bound = bind(McpSession(store, session)) if session is not None else None
        round_token = CURRENT_ROUND.set(current)
        try:
            await self._modern(
                scope, receive, self._calls_open_first(store, current, returning, send)
            )
        finally:
            CURRENT_ROUND.reset(round_token)
            if bound is not None:
                unbind(bound)
            if returning is not None:
                with anyio.CancelScope(shield=True):
                    await returning.give_back()

    def _calls_open_first(
        self,
        store: SessionStore,
        current: CallRound,
        returning: _LeaseReturn | None,
        send: Send,
    ) -> Send:
        """`send`, but before the answer's last body message the call session the round
        drew is created (so its next round finds it) and the lease goes back."""

        async def sending(message: Message) -> None:
            if _last_body(message):
                with anyio.CancelScope(shield=True):
                    if current.drawn is not None and self._calls is not None:
                        await self._calls.open(store, current.drawn)
                    if returning is not None:
                        await returning.give_back()
            await send(message)

        return sending

    async def _modern(self, scope: Scope, receive: Receive, send: Send) -> None:
        await handle_modern_request(
            self.server,
            self.security_settings,
            self.json_response,
            self._lifespan_state,
            scope,
            receive,
            send,
        )

    # -- opening -----------------------------------------------------------------

    async def _open(
        self,
        store: SessionStore,
        owner: dict[str, Any] | None,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        body, replay = await _buffer_body(receive)
        try:
            record = read_initialize(body, owner)
            session = await store.create(metadata=record.metadata())
        except OpeningRejected as refused:
            await error_response(refused.status, refused.message, refused.code)(
                scope, receive, send
            )
            return
        except SessionStoreError as exc:
            await store_refusal(exc)(scope, receive, send)
            return
        local = await self._start(session.id, None)
        self.metrics.sessions_opened.inc()
        status: int | None = None

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        token = bind(McpSession(store, session))
        request = CURRENT_REQUEST.set(RequestWrites(datetime_to_ms(session.created_at)))
        try:
            await local.transport.handle_request(scope, replay, watch)
        finally:
            CURRENT_REQUEST.reset(request)
            unbind(token)
            if status is None or status >= 400:
                # Nothing was established: no session is left behind.
                await self._drop(session.id, "refused")
                with anyio.CancelScope(shield=True), contextlib.suppress(SessionStoreError):
                    await store.delete(session.id)
            elif local.connection is not None:
                # The client's `initialized` may land on another replica; this copy
                # must not wait for it before sending server-initiated requests.
                local.connection.initialized.set()

    # -- serving -----------------------------------------------------------------

    async def _serve(
        self,
        store: SessionStore,
        session_id: str,
        owner: dict[str, Any] | None,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        stream = scope["method"] == "GET"
        tracked = (
            store.track_connection(session_id, read_session=True)
            if stream
            else store.track_request(session_id, read_session=True)
        )
        try:
            lease = await tracked.__aenter__()
        except SessionStoreError as exc:
            if isinstance(exc, SessionGone | SessionNotFound):
                await self._drop(session_id, "ended")
            await store_refusal(exc)(scope, receive, send)
            return
        assert lease.session is not None
        # The response's event rides with the lease's return (see RedisEventStore).
        writes = RequestWrites(datetime_to_ms(lease.session.last_activity), tracked.riders)
        returning = _LeaseReturn(tracked, session_id, writes)
        send_then_return = returning.before_last_body(send)
        try:
            record = HandshakeRecord.from_metadata(lease.session.metadata)
            if record is None or record.owner != owner:
                await not_found()(scope, receive, send_then_return)
                return
            if not stream:
                kept = await self._relay_answer_elsewhere(
                    session_id, scope, receive, send_then_return
                )
                if kept is None:
                    return
                receive = kept
            if stream and self.resumable:
                resumed = await self._stream_from_redis(
                    session_id, scope, receive, send_then_return
                )
                if resumed is None:
                    return
                scope = resumed
            local = await self._local(session_id, record)
            local.host_headers = [(k, v) for k, v in scope["headers"] if k in _HOST_HEADERS]
            token = bind(McpSession(store, lease.session))
            request = CURRENT_REQUEST.set(writes)
            try:
                await local.transport.handle_request(scope, receive, send_then_return)
            finally:
                CURRENT_REQUEST.reset(request)
                unbind(token)
        finally:
            with anyio.CancelScope(shield=True):
                await returning.give_back()

    async def _relay_answer_elsewhere(
        self, session_id: str, scope: Scope, receive: Receive, send: Send
    ) -> Receive | None:
        """Relay a client's answer to a server-initiated request that this replica did not
        send (it waits on another replica) and answer 202: then None. Otherwise the
        `receive` that hands out the (already read) body again."""
        body, replay = await _buffer_body(receive)
        answer = _client_answer(body)
        if answer is None:
            return replay
        local = self._sessions.get(session_id)
        if local is not None and local.awaiting.pop(str(answer.id), None) is not None:
            return replay  # sent from here: the local transport takes it
        assert self._store is not None
        try:
            await RedisEventStore(self._store, session_id).relay_answer(answer)
        except SessionStoreError as exc:
            await store_refusal(exc)(scope, replay, send)
            return None
        self.metrics.answers_relayed.inc()
        accepted = Response(status_code=202, headers={MCP_SESSION_ID_HEADER: session_id})
        await accepted(scope, replay, send)
        return None

    def _await_answer(self, local: LocalSession, request_id: str, entry_id: str) -> None:
        """Note a server-initiated request sent from `local`; relay answers that land on
        other replicas to it until every such request is answered."""
        local.awaiting[request_id] = entry_id
        if not local.relaying and self._group is not None:
            local.relaying = True
            self._group.start_soon(self._relay_answers, local, entry_id)

    async def _relay_answers(self, local: LocalSession, cursor: str) -> None:
        events = local.events
        assert isinstance(events, RedisEventStore)
        try:
            while local.awaiting and local.usable_for_streams:
                try:
                    cursor, answers = await events.answers_after(cursor)
                except SessionStoreError:
                    await anyio.sleep(1.0)
                    continue
                for answer in answers:
                    if local.awaiting.pop(str(answer.id), None) is not None:
                        await _deliver(local, answer)
        finally:
            local.relaying = False

    async def _stream_from_redis(
        self, session_id: str, scope: Scope, receive: Receive, send: Send
    ) -> Scope | None:
        """The GET's scope, made to resume from the session's Redis stream.

        A GET with ``Last-Event-ID`` resumes after that event; one without starts
        the standalone stream from now (a priming event is written and resumed
        from). Either way the replica serves the stream from Redis, so messages
        produced on any replica reach it. A ``Last-Event-ID`` that is not an event
        of this session gets 400 and nothing is replayed (None is returned).
        """
        assert self._store is not None
        headers = Headers(scope=scope)
        last = headers.get(LAST_EVENT_ID_HEADER)
        if last is not None:
            if parse_event_id(last, session_id) is None:
                await error_response(400, "Last-Event-ID is not an event of this session")(
                    scope, receive, send
                )
                return None
            self.metrics.streams_resumed.inc()
            return scope
        self.metrics.streams_opened.inc()
        try:
            start = await RedisEventStore(self._store, session_id).store_event(GET_STREAM_KEY, None)
        except SessionStoreError as exc:
            await store_refusal(exc)(scope, receive, send)
            return None
        raw = [(k, v) for k, v in scope["headers"] if k != LAST_EVENT_ID_HEADER.encode()]
        return {**scope, "headers": [*raw, (LAST_EVENT_ID_HEADER.encode(), start.encode())]}

    async def _local(self, session_id: str, record: HandshakeRecord) -> LocalSession:
        """This replica's usable copy of the session, adopted from `record` if it has none.

        Returns with no await between the usability check and the caller's use.
        """
        local = self._sessions.get(session_id)
        if local is not None and local.usable:
            return local
        async with self._adopt_lock:
            local = self._sessions.get(session_id)
            # None, not connected yet, or reaped since: (re)build it from the record.
            while local is None or not local.usable:
                local = await self._start(session_id, record)
                self.metrics.sessions_adopted.inc()
        return local

    async def _start(self, session_id: str, record: HandshakeRecord | None) -> LocalSession:
        assert self._group is not None and self._store is not None
        holder: list[LocalSession] = []
        events = (
            RedisEventStore(
                self._store,
                session_id,
                max_events=self.max_events,
                stopped=lambda: not holder or not holder[0].usable_for_streams,
                on_request=lambda request_id, entry: self._await_answer(
                    holder[0], request_id, entry
                ),
                metrics=self.metrics,
            )
            if self.resumable
            else None
        )
        transport = StreamableHTTPServerTransport(
            mcp_session_id=session_id,
            is_json_response_enabled=self.json_response,
            event_store=events,
            security_settings=self.security_settings,
            retry_interval=self.retry_interval,
            idle_timeout=self.idle_timeout,
        )
        local = LocalSession(session_id, transport, events=events)
        holder.append(local)
        previous = self._sessions.get(session_id)
        self._sessions[session_id] = local
        if previous is not None and previous is not local:
            await self._stop(previous, "replaced")
        self.metrics.local_sessions.set(len(self._sessions))
        await self._group.start(self._run_local, local, record)
        return local

    async def _run_local(
        self,
        local: LocalSession,
        record: HandshakeRecord | None,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            await serve_local(
                self.server, self._lifespan_state, local, record, task_status=task_status
            )
        finally:
            if self._sessions.get(local.session_id) is local:
                del self._sessions[local.session_id]
                self.metrics.local_sessions.set(len(self._sessions))
                self.metrics.local_dropped.labels(local.ended or "closed").inc()

    # -- ending ------------------------------------------------------------------

    async def _end(
        self,
        store: SessionStore,
        session_id: str,
        owner: dict[str, Any] | None,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        try:
            session = await store.get(session_id)
            record = HandshakeRecord.from_metadata(session.metadata)
            if record is None or record.owner != owner:
                await not_found()(scope, receive, send)
                return
            await store.delete(session_id)
        except SessionStoreError as exc:
            if isinstance(exc, SessionGone | SessionNotFound):
                await self._drop(session_id, "ended")
            await store_refusal(exc)(scope, receive, send)
            return
        await self._drop(session_id, "deleted")
        response = Response(
            status_code=200,
            media_type="application/json",
            headers={MCP_SESSION_ID_HEADER: session_id},
        )
        await response(scope, receive, send)

    async def _drop(self, session_id: str, reason: str) -> None:
        """Drop this replica's copy of the session, if it holds one."""
        local = self._sessions.pop(session_id, None)
        if local is None:
            return
        self.metrics.local_sessions.set(len(self._sessions))
        self.metrics.local_dropped.labels(reason).inc()
        await self._stop(local, reason)

    @staticmethod
    async def _stop(local: LocalSession, reason: str) -> None:
        local.ended = reason
        with anyio.CancelScope(shield=True):
            await local.transport.terminate()

    async def _follow_session_events(self, store: SessionStore) -> None:
        """Drop the local copy of every session that ends anywhere in the fleet."""
        follower = EventFollower(store.redis, store.settings, after="$")
        while True:
            try:
                for event in await follower.read():
                    if event.kind in _ENDING and event.session_id in self._sessions:
                        await self._drop(event.session_id, str(event.kind))
            except SessionStoreError:
                # Redis is away: requests answer 503 meanwhile; read on from the cursor.
                logger.warning("session events unreadable; retrying", exc_info=True)
                await anyio.sleep(1.0)
                cursor = follower.cursor
                follower = EventFollower(
                    store.redis, store.settings, after=cursor if cursor else "$"
                )


class _LeaseReturn:
    """Returns a request's lease once: just before the response's last body message,
    so a client that waits for this response before its next request never meets its
    own lease, or when the request ends without one."""

    def __init__(
        self,
        tracked: TrackedLease | TrackedFleetLease,
        session_id: str | None,
        writes: RequestWrites,
    ) -> None:
        self._tracked = tracked
        self._session_id = session_id
        self._writes = writes
        self._returned = False

    async def give_back(self) -> None:
        if self._returned:
            return
        self._returned = True
        self._writes.close()
        try:
            await self._tracked.__aexit__(None, None, None)
        except SessionStoreError:
            if self._session_id is None:
                logger.warning("a fleet lease of an MCP request lapses at its deadline")
            else:
                logger.warning(
                    "a lease of MCP session %s lapses at its deadline", short_id(self._session_id)
                )

    def before_last_body(self, send: Send) -> Send:
        async def sending(message: Message) -> None:
            if _last_body(message):
                # The SDK's SSE response cancels its task group as soon as its writer has
                # handed over the last event, which can be while this return is under
                # way: cancelled, the lease would stay held until its deadline (counted
                # against the session's limit) and the Redis connection be dropped.
                with anyio.CancelScope(shield=True):
                    await self.give_back()
            await send(message)

        return sending


def _last_body(message: Message) -> bool:
    """Whether `message` is a response's last body message (the response then is sent)."""
    return message["type"] == "http.response.body" and not message.get("more_body", False)


def _is_listen(body: bytes) -> bool:
    """Whether a 2026-07-28 POST `body` opens a ``subscriptions/listen`` stream."""
    if b"subscriptions/listen" not in body:
        return False  # the common case, not parsed here
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):
        return False
    return isinstance(message, dict) and message.get("method") == "subscriptions/listen"


def _client_answer(body: bytes) -> JSONRPCResponse | JSONRPCError | None:
    """The body as a client's answer (a JSON-RPC response or error with an id), if it is one."""
    if b'"method"' in body:
        return None  # a request or notification (the common case, not parsed twice)
    try:
        message = jsonrpc_message_adapter.validate_json(body, by_name=False)
    except ValidationError:
        return None
    if isinstance(message, JSONRPCResponse | JSONRPCError) and message.id is not None:
        return message
    return None


async def _deliver(local: LocalSession, answer: JSONRPCResponse | JSONRPCError) -> None:
    """Hand a relayed answer to the local transport as the POST the client sent elsewhere."""
    body = answer.model_dump_json(by_alias=True, exclude_unset=True).encode()
    version = local.connection.protocol_version if local.connection else ""
    headers = [
        (b"content-type", b"application/json"),
        (b"accept", b"application/json, text/event-stream"),
        (MCP_SESSION_ID_HEADER.encode(), local.session_id.encode()),
        (_PROTOCOL_VERSION_HEADER.encode(), version.encode()),
        *local.host_headers,
    ]
    scope: Scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "headers": headers,
        "http_version": "1.1",
        "scheme": "http",
    }
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> Message:
        return pending.pop() if pending else {"type": "http.disconnect"}

    async def discard(message: Message) -> None:
        del message

    await local.transport.handle_request(scope, receive, discard)


def _owner(scope: Scope) -> dict[str, Any] | None:
    """The credential of the request (set by the SDK's bearer-auth middleware), if any."""
    user = scope.get("user")
    if isinstance(user, AuthenticatedUser):
        return dict(authorization_context(user))
    return None


async def _buffer_body(receive: Receive) -> tuple[bytes, Receive]:
    """Read the whole request body; returns it and a `receive` that hands it out again."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return body, replay
