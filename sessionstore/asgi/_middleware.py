"""`SessionMiddleware`: plain ASGI, for Starlette, FastAPI or any ASGI app.

Shaped like ``starlette/middleware/sessions.py``, but the cookie (when used)
carries only a signed session id; the session itself lives in Redis. Per
request it:

1. finds the session id in the session header (default ``Mcp-Session-Id``)
   or the signed cookie; a request without one passes through with
   ``state["session"] = None``;
2. reads the request body whole first (within `BodyReadLimits`: 408 when it
   does not arrive in time, 413 when too large), so a client trickling its
   body holds no lease while it does; then takes a request lease
   (``store.track_request``), which checks the session,
   slides its idle deadline, enforces the fleet-wide limits and reads the
   session in the same round trip, and puts it on ``scope["state"]["session"]``
   (``request.state.session``), with its state to change on
   ``request.state.session_draft`` (a `SessionDraft`);
3. answers refusals itself (404 unknown, 410 ended, 429/503 limits, 503 Redis
   down, all JSON with ``Retry-After`` where a retry helps), or, with
   ``renew_expired``, replaces an expired id by its successor (`SessionStore.resume`)
   and returns the new id in the session header;
4. when the handler changed the draft, commits the changes with the lease's
   return as the response starts (one round trip, compare-and-set on the
   version read in step 2), so a conflict can still be answered: 409
   ``session_conflict`` instead of the handler's response, nothing written;
   otherwise returns the lease just before the response's last body message goes out
   (before the head for a response without a body: 204, 304, HEAD), so a client
   that waits for one response before sending the next never meets its own
   lease: sequential requests never hit a per-session limit of 1;
   background tasks run after that, unleased; and writes the session id back
   (header and cookie) when the app created, rotated or dropped the session.

It also watches the ASGI lifespan: on shutdown it refuses new session
requests, drains the running ones (bounded by ``drain_timeout``) and returns
their leases before the app's own shutdown closes the Redis client.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._redis import set_command_budget
from ..exceptions import SessionExpired, SessionStoreError, VersionConflict
from ..store import Lease, Session, SessionStore, TrackedLease
from ._body import DEFAULT_BODY_LIMITS, BodyReadLimits, read_body
from ._cookie import SessionCookie
from ._inflight import InFlightRequests
from ._problems import Problem, draft_conflict, problem_for, shutting_down

logger = logging.getLogger("sessionstore.asgi")

#: ``scope["state"]`` keys the middleware sets for the app.
SESSION = "session"
DRAFT = "session_draft"
LEASE = "session_lease"
RENEWED_FROM = "session_renewed_from"
#: Response header naming the expired id a renewed session replaced.
RENEWED_HEADER = "Sessionstore-Renewed-From"


@dataclass(slots=True)
class _Opened:
    tracked: TrackedLease
    lease: Lease
    session: Session
    ticket: int = 0
    renewed_from: str | None = None
    returned: bool = False
    #: The handler's response was replaced (its changes could not be committed).
    replaced: bool = False

    @classmethod
    def taken(cls, tracked: TrackedLease, lease: Lease) -> _Opened:
        """The request's lease, taken with ``read_session`` (so it carries the session)."""
        assert lease.session is not None
        return cls(tracked, lease, lease.session)


@dataclass(slots=True)
class _Incoming:
    session_id: str | None
    #: The id the request's cookie carried (validly signed), if any.
    cookie_id: str | None
    #: The request carried a cookie whose signature was wrong.
    bad_cookie: bool = False
    #: The id came in the session header: the client does not use cookies.
    from_header: bool = False


class SessionMiddleware:
    """Attach the Redis-backed session to each request and hold a request lease for it.

    Args:
        app: the ASGI app to wrap.
        store: the store; when None, read from ``scope["state"][state_key]``
            (a lifespan that yields ``{"session_store": store}``).
        state_key: where to find the store in the lifespan state.
        header: request/response header carrying the session id.
        cookie: read and write a signed session-id cookie too.
        renew_expired: answer an expired id with a successor session instead of 410.
        gone_status: status for ended ids (MCP clients expect 404 to start over).
        exclude_paths: paths served without looking at the session (health, metrics).
        inflight: the registry of running requests (share it to read its size).
        drain_timeout: seconds running requests get to finish on shutdown.
        body_limits: the deadline and size of a body read before the lease is
            taken; None hands the body to the app unread (and leased while it
            arrives).
        redis_timeout: seconds each Redis command of a request (the middleware's
            and the app's) may take, pool wait included (`command_budget`); a hung
            Redis then gives a 503 within about this long. None: the client's own
            timeouts.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        app: ASGIApp,
        store: SessionStore | None = None,
        *,
        state_key: str = "session_store",
        header: str = "Mcp-Session-Id",
        cookie: SessionCookie | None = None,
        renew_expired: bool = False,
        gone_status: int = 410,
        exclude_paths: Collection[str] = (),
        inflight: InFlightRequests | None = None,
        drain_timeout: float = 10.0,
        body_limits: BodyReadLimits | None = DEFAULT_BODY_LIMITS,
        redis_timeout: float | None = None,
    ) -> None:
        self.app = app
        self.store = store
        self.state_key = state_key
        self.header = header
        self._header_key = header.lower().encode("latin-1")
        self.cookie = cookie
        self.renew_expired = renew_expired
        self.gone_status = gone_status
        self.exclude_paths = frozenset(exclude_paths)
        self.inflight = inflight if inflight is not None else InFlightRequests()
        self.drain_timeout = drain_timeout
        self.body_limits = body_limits
        self.redis_timeout = redis_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, self._watch_shutdown(receive), send)
            return
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        # `command_budget`, without a generator-based context manager's call layers.
        reset_budget = set_command_budget(self.redis_timeout)
        try:
            if scope["path"] in self.exclude_paths:
                await self.app(scope, receive, send)
            else:
                await self._serve(scope, receive, send)
        finally:
            reset_budget()

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        state: dict[str, Any] = scope.setdefault("state", {})
        state[SESSION] = None
        incoming = self._incoming(scope)
        if incoming.session_id is None:
            await self.app(scope, receive, self._writer(scope, send, incoming))
            return
        if self.inflight.closing:
            await self._refuse(scope, receive, send, shutting_down(), incoming)
            return
        if self.body_limits is not None:
            # Before the lease: a slow body must not hold one of the session's slots.
            receive, problem = await read_body(scope, receive, self.body_limits)
            if problem is not None:
                await self._refuse(scope, receive, send, problem, incoming)
                return
        store = self._store(scope)
        try:
            opened = await self._open(store, incoming.session_id, scope["type"] == "websocket")
        except SessionStoreError as exc:
            await self._refuse(scope, receive, send, self._problem(exc), incoming)
            return
        state[SESSION] = opened.session
        state[DRAFT] = opened.lease.draft
        state[LEASE] = opened.lease
        state[RENEWED_FROM] = opened.renewed_from
        opened.ticket = self.inflight.add(store, opened.lease)
        try:
            await self.app(scope, receive, self._writer(scope, send, incoming, opened))
        except BaseException as exc:
            await self._close(opened, exc)
            raise
        await self._close(opened, None)

    # -- finding and opening the session ----------------------------------------

    def _incoming(self, scope: Scope) -> _Incoming:
        from_header: str | None = None
        cookies: list[str] = []
        for key, value in scope.get("headers", ()):
            if key == self._header_key and from_header is None:
                from_header = value.decode("latin-1").strip()
            elif key == b"cookie" and self.cookie is not None:
                cookies.append(value.decode("latin-1"))
        cookie_id, bad = self._read_cookie("; ".join(cookies))
        return _Incoming(from_header or cookie_id, cookie_id, bad, from_header=bool(from_header))

    def _read_cookie(self, header: str) -> tuple[str | None, bool]:
        if self.cookie is None or not header:
            return None, False
        # Starlette's lenient parser: one malformed cookie does not hide the others.
        value = cookie_parser(header).get(self.cookie.name)
        if value is None:
            return None, False
        session_id = self.cookie.unsign(value)
        return session_id, session_id is None

    def _store(self, scope: Scope) -> SessionStore:
        if self.store is not None:
            return self.store
        store = scope.get("state", {}).get(self.state_key)
        if not isinstance(store, SessionStore):
            raise RuntimeError(
                f"SessionMiddleware has no store: pass store=, or yield {{{self.state_key!r}: "
                "store}} from the app's lifespan"
            )
        return store

    async def _open(self, store: SessionStore, session_id: str, websocket: bool) -> _Opened:
        # A websocket is a long-lived connection: counted, not limited like requests.
        # The lease's reply carries the session: one round trip in, one out.
        track = store.track_connection if websocket else store.track_request
        try:
            tracked = track(session_id, read_session=True)
            return _Opened.taken(tracked, await tracked.__aenter__())
        except SessionExpired:
            if not self.renew_expired:
                raise
        successor = await store.resume(session_id)
        tracked = track(successor.id, read_session=True)
        opened = _Opened.taken(tracked, await tracked.__aenter__())
        opened.renewed_from = session_id
        # Ids are bearer credentials: they stay out of the logs.
        logger.info(
            "an expired session was renewed (shard %d)", store.session_keys(successor.id).shard
        )
        return opened

    async def _commit(self, opened: _Opened) -> Problem | None:
        """Return the lease with the draft's changes; the problem to answer instead
        of the handler's response when they could not be written."""
        opened.returned = True
        self.inflight.remove(opened.ticket)
        try:
            await opened.tracked.__aexit__(None, None, None)
        except VersionConflict as exc:
            return draft_conflict(exc)
        except SessionStoreError as exc:
            return self._problem(exc)
        return None

    async def _close(self, opened: _Opened, exc: BaseException | None) -> None:
        """Return the lease, once: at the response's end or when the app finishes."""
        if opened.returned:
            return
        opened.returned = True
        self.inflight.remove(opened.ticket)
        try:
            await opened.tracked.__aexit__(
                type(exc) if exc else None, exc, exc.__traceback__ if exc else None
            )
        except SessionStoreError:
            # The response is already out; the lease lapses at its deadline.
            logger.warning(
                "could not return lease %s; it lapses at its deadline",
                opened.lease.lease_id,
                exc_info=True,
            )

    # -- answering ------------------------------------------------------------------

    def _problem(self, exc: SessionStoreError) -> Problem:
        problem = problem_for(exc)
        if problem.status == 410 and self.gone_status != 410:
            problem = Problem(self.gone_status, problem.code, problem.detail, extra=problem.extra)
        return problem

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, problem: Problem, incoming: _Incoming
    ) -> None:
        if scope["type"] == "websocket":
            # 1008: policy violation; the reason names the problem code.
            await send({"type": "websocket.close", "code": 1008, "reason": problem.code})
            return
        response = problem.response()
        dropped_cookie = incoming.cookie_id or incoming.bad_cookie
        dead_id = problem.status in (400, 404, self.gone_status)
        if self.cookie is not None and dropped_cookie and dead_id and not incoming.from_header:
            response.headers.append("Set-Cookie", self.cookie.clear_header())
        await response(scope, receive, send)

    def _writer(
        self, scope: Scope, send: Send, incoming: _Incoming, opened: _Opened | None = None
    ) -> Send:
        """Wrap `send` to write the session id back when it changed during the request, and
        to return the lease before the response's last body message."""

        async def send_with_session(message: Message) -> None:
            if opened is not None and opened.replaced:
                return  # the handler's response gave way to the conflict's
            if message["type"] == "http.response.start":
                if opened is not None and _changed(opened) and not opened.returned:
                    problem = await self._commit(opened)
                    if problem is not None:
                        opened.replaced = True
                        await _send_problem(send, problem)
                        return
                self._write_session(scope, message, incoming, opened)
                if opened is not None and _bodiless(scope, message):
                    # The client counts such a response done at its headers, before any
                    # body message: return the lease first, as for the last body message.
                    await self._close(opened, None)
            elif _last_body(message) and opened is not None and scope["type"] == "http":
                await self._close(opened, None)
            await send(message)

        return send_with_session

    def _write_session(
        self, scope: Scope, start: Message, incoming: _Incoming, opened: _Opened | None
    ) -> None:
        """Write the session id (header, cookie) into the response's head when it changed."""
        current = scope["state"].get(SESSION)
        current_id = current.id if isinstance(current, Session) else None
        renewed_from = opened.renewed_from if opened is not None else None
        if (
            current_id == incoming.session_id
            and not renewed_from
            and (self.cookie is None or incoming.from_header)
        ):
            return  # nothing to write, as for most responses: the head is left as it is
        start.setdefault("headers", [])
        headers = MutableHeaders(scope=start)
        if current_id is not None and current_id != incoming.session_id:
            headers[self.header] = current_id
        if renewed_from:
            headers[RENEWED_HEADER] = renewed_from
        self._write_cookie(headers, incoming, current_id)

    def _write_cookie(
        self, headers: MutableHeaders, incoming: _Incoming, current: str | None
    ) -> None:
        if self.cookie is None or incoming.from_header:
            return
        if current is not None and current != incoming.cookie_id:
            headers.append("Set-Cookie", self.cookie.set_header(current))
        elif current is None and (incoming.cookie_id or incoming.bad_cookie):
            headers.append("Set-Cookie", self.cookie.clear_header())

    # -- shutdown ---------------------------------------------------------------------

    def _watch_shutdown(self, receive: Receive) -> Receive:
        async def receive_and_drain() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                # An app object may be started again after a shutdown (test clients do).
                self.inflight.closing = False
            elif message["type"] == "lifespan.shutdown":
                result = await self.inflight.drain(self.drain_timeout)
                logger.info(
                    "drained: %d request(s) finished, %d lease(s) returned",
                    result.finished,
                    result.released,
                )
            return message

        return receive_and_drain


def _bodiless(scope: Scope, start: Message) -> bool:
    """Whether a client takes this response as complete once its head arrives."""
    status = int(start["status"])
    if scope.get("method") == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return True
    # The first content-length, as `MutableHeaders.get` finds it (raw names are lower case).
    for key, value in start.get("headers", ()):
        if key == b"content-length":
            return bool(value == b"0")
    return False


def _last_body(message: Message) -> bool:
    return message["type"] == "http.response.body" and not message.get("more_body", False)


def _changed(opened: _Opened) -> bool:
    draft = opened.lease.draft
    return draft is not None and draft.changed


async def _send_problem(send: Send, problem: Problem) -> None:
    response = problem.response()
    start = {"type": "http.response.start", "status": response.status_code}
    await send({**start, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})
