"""MCP connector on the official MCP Python SDK's client (``ClientSession``).

Behind the ``mcp`` extra: this is the only upstream module that imports the
SDK. An MCP upstream is a server over stdio (a child process), Streamable
HTTP or SSE (`McpTarget`). What the connector adds to the SDK, and why:

- **An owner task per connection.** The SDK's transports and `ClientSession`
  are anyio context managers whose cancel scopes must be exited by the task
  that entered them ("Attempted to exit cancel scope in a different task").
  The pool opens and closes connections from whichever task needs them, so
  each connection's contexts live in one task of its own, which enters them,
  waits until asked to close, and exits them. Requests are sent from any task
  (the SDK multiplexes them by JSON-RPC id).
- **A dropped link is seen at once.** Messages from the transport pass a
  relay; when the transport's stream ends (a stdio child exits, an HTTP
  transport fails), the connection is marked dead, pending requests end with
  the SDK's "connection closed", and the pool reopens it on the next call.
- **Faults are told apart** (`McpConnector.classify`): a tool's
  ``CallToolResult.is_error`` is a result, not a fault; a 404 "Session
  terminated"/"Session not found" means "handshake again" and does not count
  against the breaker; method-not-found and invalid params fail fast; the
  SDK's HTTP errors (httpx2) are network faults although they are no
  ``OSError``; a request that provably never left (the link was already
  gone, the TCP connect was refused) may be repeated; a request that may have
  reached the server and is neither read-only nor idempotent (its tool's
  annotations) is never repeated (`OutcomeUnknown`).
- **Streamable HTTP sessions move between processes.** After the handshake,
  `McpConnection.handoff` holds the upstream's ``Mcp-Session-Id``, the
  protocol version and the initialize result (nothing secret); another
  process connects with it, sends the header and installs the result with
  ``ClientSession.adopt`` (no second handshake). If the upstream no longer
  knows the session, the connector does the handshake after all. Processes on
  one session send at once, and the server tells its requests apart by their
  JSON-RPC ids, so each connection's ids start at a random point.
- **Either protocol era.** By default (`McpTarget.mode` ``legacy``) the
  connection does the ``initialize`` handshake; with ``auto`` it sends
  ``server/discover`` first and settles on the 2026-07-28 revision when the
  server speaks it (stateless: nothing to hand off), else falls back to
  ``initialize``. The health probe is ``ping`` in the handshake revisions and
  ``server/discover`` in the 2026-07-28 one, which removed ``ping``.
- **Every step is bounded**: spawn + handshake by ``connect_timeout``, every
  request by ``call_timeout``; a failed connect closes what it opened (no
  half-open connection, no stray child: the SDK's stdio transport kills the
  child's process group on exit).

Credentials: an HTTP upstream's secret is a bearer token (sent as
``Authorization: Bearer ...``) or a JSON object of headers; a stdio upstream's
secret is a JSON object of environment variables for the child. Either is
sealed like an IMAP password; an upstream without one stores none.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any, TextIO, TypeVar

import anyio
import httpx2
import mcp_types as types
from mcp.client.session import ClientSession
from mcp.client.sse import sse_client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.shared.jsonrpc_dispatcher import JSONRPCDispatcher
from mcp.shared.message import SessionMessage
from mcp_types import (
    CONNECTION_CLOSED,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    REQUEST_TIMEOUT,
)
from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError

from .._log_filters import add_filter_once
from ..exceptions import InvalidInput
from ._classify import Action, Verdict
from ._faults import ConnectionDropped
from ._mcp_target import McpTarget
from ._spec import UpstreamSpec

logger = logging.getLogger("sessionstore.upstream.mcp")

T = TypeVar("T")

#: How the pool's MCP client introduces itself to servers.
CLIENT_INFO = types.Implementation(name="sessionstore", version="0.1")
_SESSION_HEADER = "mcp-session-id"
#: Server texts that mean "this upstream session is gone" (SDK servers, SDK client).
_SESSION_GONE = ("session terminated", "session not found")

_Streams = tuple[Any, Any]
#: Messages the relay may hold for the session: a small buffer saves a task switch
#: per message; the transport's own streams stay unbuffered (back-pressure).
_RELAY_BUFFER = 32


class _ShortenSessionIds(logging.Filter):
    """Keeps only the first characters of the upstream session id the SDK's HTTP
    client logs at INFO ("Received session ID: ..."): the id is the credential to
    that upstream session, and logs are read by more people than Redis is."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        head, found, session_id = message.partition("session ID: ")
        if found and len(session_id) > 8:
            record.msg, record.args = f"{head}{found}{session_id[:8]}…", ()
        return True


add_filter_once(streamable_http_client.__module__, _ShortenSessionIds)


class SessionTerminated(ConnectionDropped):
    """The upstream no longer knows the session (HTTP 404): handshake again.

    Says nothing bad about the server's health; the request was not served.

    .. versionadded:: 0.1
    """


class NotDelivered(ConnectionDropped):
    """The request provably never reached the upstream (link already gone, connect refused).

    Safe to send again, whatever the tool does.

    .. versionadded:: 0.1
    """


class OutcomeUnknown(Exception):
    """The link failed after a request that is not safe to repeat was sent.

    The tool may have run; it is neither read-only nor idempotent by its
    annotations, so the pool does not send it again.

    .. versionadded:: 0.1
    """


class StartFailed(Exception):
    """The stdio server could not be started (no such command, not executable, bad cwd).

    .. versionadded:: 0.1
    """


class Handoff(BaseModel):
    """What another process needs to continue a Streamable HTTP upstream session.

    Nothing secret: the session id is the upstream's, and the upstream binds it
    to the credential that opened it.

    .. versionadded:: 0.1
    """

    model_config = ConfigDict(frozen=True)

    session_id: str
    protocol_version: str
    #: The server's InitializeResult as a JSON text (``ClientSession.adopt`` takes it
    #: back); a text, because Redis' cjson would turn its empty lists into objects.
    initialize_result: str


def _root(exc: BaseException) -> BaseException:
    """The first real failure inside (nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup):
        inner = [e for e in exc.exceptions if not isinstance(e, asyncio.CancelledError)]
        exc = (inner or list(exc.exceptions))[0]
    return exc


class McpConnection:
    """One MCP client session, owned by its own task (see the module docstring).

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        spec: UpstreamSpec,
        target: McpTarget,
        *,
        call_timeout: float,
        connect_timeout: float,
        headers: Mapping[str, str],
        env: Mapping[str, str],
        errlog: TextIO,
        resume: Handoff | None = None,
    ) -> None:
        self.spec = spec
        self.target = target
        self.call_timeout = call_timeout
        self.connect_timeout = connect_timeout
        self._headers = dict(headers)
        self._env = dict(env)
        self._errlog = errlog
        self._resume = resume
        self.session: ClientSession | None = None
        #: True when this connection continued a session opened elsewhere.
        self.adopted = False
        #: Tool name -> True when the tool says it is read-only or idempotent.
        self.repeatable_tools: dict[str, bool] = {}
        self._upstream_session_id: str | None = resume.session_id if resume else None
        self._dead = asyncio.Event()
        self._closing = asyncio.Event()
        self._owner: asyncio.Task[None] | None = None
        self._cause: BaseException | None = None
        self._in_flight = 0

    # -- liveness --------------------------------------------------------------

    @property
    def alive(self) -> bool:
        """False once the link is gone (child exited, transport failed) or closing."""
        return not self._dead.is_set() and not self._closing.is_set()

    @property
    def cause(self) -> BaseException | None:
        """Why the owner task ended, if it failed."""
        return self._cause

    def handoff(self) -> Handoff | None:
        """The state another process continues this upstream session with (HTTP only)."""
        session = self.session
        if (
            self.target.transport != "streamable_http"
            or session is None
            or self._upstream_session_id is None
            or session.initialize_result is None
            or session.protocol_version is None
        ):
            return None
        return Handoff(
            session_id=self._upstream_session_id,
            protocol_version=session.protocol_version,
            initialize_result=session.initialize_result.model_dump_json(
                by_alias=True, exclude_none=True
            ),
        )

    # -- the owner task --------------------------------------------------------

    async def open(self) -> None:
        """Start the owner task and wait for the handshake (bounded by ``connect_timeout``).

        Raises:
            TimeoutError: no handshake within ``connect_timeout``.
            StartFailed: the stdio command could not be started.
            SessionTerminated: the session to continue is unknown upstream.
            Exception: the transport's or the server's fault otherwise.
        """
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        ready.add_done_callback(_retrieve)
        self._owner = asyncio.create_task(self._own(ready), name=f"mcp-owner:{self.spec.name}")
        try:
            async with asyncio.timeout(self.connect_timeout + 1.0):
                await asyncio.shield(ready)
        except BaseException as exc:
            await self.close(7.0)
            if isinstance(exc, TimeoutError):
                raise TimeoutError(self._took_too_long()) from None
            raise

    def _took_too_long(self) -> str:
        return f"MCP handshake with {self.target.address} took over {self.connect_timeout:g}s"

    async def _own(self, ready: asyncio.Future[None]) -> None:
        try:
            async with AsyncExitStack() as stack:
                read, write = await stack.enter_async_context(self._transport())
                relay_in, relay_out = anyio.create_memory_object_stream[SessionMessage | Exception](
                    0
                )
                stack.push_async_callback(relay_out.aclose)
                stack.push_async_callback(relay_in.aclose)
                group = await stack.enter_async_context(anyio.create_task_group())
                stack.callback(group.cancel_scope.cancel)
                group.start_soon(self._relay, read, relay_in)
                session = await stack.enter_async_context(
                    ClientSession(
                        read_timeout_seconds=self.call_timeout,
                        client_info=CLIENT_INFO,
                        dispatcher=_SharedSessionDispatcher(relay_out, write),
                    )
                )
                try:
                    with anyio.fail_after(self.connect_timeout):
                        await self._handshake(session)
                except TimeoutError:
                    raise TimeoutError(self._took_too_long()) from None
                except MCPError as exc:
                    if exc.code == REQUEST_TIMEOUT:  # the per-request bound came first
                        raise TimeoutError(self._took_too_long()) from None
                    raise
                self.session = session
                ready.set_result(None)
                await self._closing.wait()
        except asyncio.CancelledError:
            if not ready.done():
                ready.set_exception(TimeoutError(self._took_too_long()))
            raise
        except BaseException as exc:
            self._cause = cause = self._start_fault(_root(exc))
            if ready.done():
                logger.info("MCP upstream %s: link ended: %s", self.spec.name, _brief(cause))
            else:
                ready.set_exception(cause)
        finally:
            self._dead.set()

    def _start_fault(self, exc: BaseException) -> BaseException:
        spawn_errors = (FileNotFoundError, PermissionError, NotADirectoryError)
        starting = self.session is None
        if self.target.transport == "stdio" and isinstance(exc, spawn_errors) and starting:
            return StartFailed(f"cannot start {self.target.command!r}: {exc.strerror or exc}")
        return exc

    async def _relay(self, source: Any, sink: Any) -> None:
        """Pass the transport's messages on; mark the link dead when they end."""
        try:
            async with sink:
                async for item in source:
                    await sink.send(item)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream):
            pass
        finally:
            self._dead.set()

    def _transport(self) -> AbstractAsyncContextManager[_Streams]:
        target = self.target
        if target.transport == "stdio":
            assert target.command is not None
            params = StdioServerParameters(
                command=target.command,
                args=list(target.args),
                env={**target.env, **self._env} or None,
                cwd=target.cwd,
            )
            return stdio_client(params, errlog=self._errlog)
        assert target.url is not None
        headers = {**target.headers, **self._headers}
        if target.transport == "sse":
            return sse_client(
                target.url,
                headers=headers,
                timeout=self.connect_timeout,
                sse_read_timeout=self.call_timeout + 300.0,
            )
        return self._streamable_http(target.url, headers)

    @contextlib.asynccontextmanager
    async def _streamable_http(self, url: str, headers: dict[str, str]) -> AsyncIterator[_Streams]:
        if self._resume is not None:
            # The transport learns a session id only from an initialize answer, so a
            # continued session travels as a default header of the HTTP client.
            headers = {**headers, _SESSION_HEADER: self._resume.session_id}
        timeout = httpx2.Timeout(self.connect_timeout, read=self.call_timeout + 5.0)
        async with (
            httpx2.AsyncClient(
                headers=headers, timeout=timeout, event_hooks={"response": [self._saw_response]}
            ) as client,
            # Not terminated on close: another process may continue the session.
            streamable_http_client(url, http_client=client, terminate_on_close=False) as streams,
        ):
            yield streams[0], streams[1]

    async def _saw_response(self, response: httpx2.Response) -> None:
        session_id = response.headers.get(_SESSION_HEADER)
        if session_id and self._resume is None:
            self._upstream_session_id = session_id

    async def _handshake(self, session: ClientSession) -> None:
        capabilities: types.ServerCapabilities
        if self._resume is not None:
            result = types.InitializeResult.model_validate_json(self._resume.initialize_result)
            session.adopt(result)
            self.adopted = True
            capabilities = result.capabilities
        elif self.target.mode == "auto":
            capabilities = await self._negotiate(session)
        else:
            capabilities = (await session.initialize()).capabilities
        if capabilities.tools is not None:
            # The first request of a continued session: a 404 here says it is gone.
            listing = await self._call("tools/list", session.list_tools, repeatable=True)
            self._absorb(listing)

    async def _negotiate(self, session: ClientSession) -> types.ServerCapabilities:
        """``server/discover`` (the 2026-07-28 revision); ``initialize`` when the server
        is older. Only an answer of the server decides: a transport fault propagates."""
        try:
            return (await session.discover()).capabilities
        except (MCPError, RuntimeError) as exc:
            # RuntimeError: a discover answer that shares no modern revision with us.
            if isinstance(exc, RuntimeError) and "protocol version" not in str(exc):
                raise
            logger.debug(
                "MCP upstream %s: no server/discover (%s); initialize", self.spec.name, exc
            )
        return (await session.initialize()).capabilities

    @property
    def revision(self) -> str | None:
        """The negotiated protocol revision (``2026-07-28``, ``2025-11-25``...)."""
        return None if self.session is None else self.session.protocol_version

    @property
    def discovered(self) -> bool:
        """True when the revision was settled by ``server/discover`` (no ``ping`` there)."""
        return self.session is not None and self.session.discover_result is not None

    def _absorb(self, listing: types.ListToolsResult) -> None:
        for tool in listing.tools:
            notes = tool.annotations
            self.repeatable_tools[tool.name] = bool(
                notes is not None and (notes.read_only_hint or notes.idempotent_hint)
            )

    async def close(self, timeout: float) -> None:
        """Ask the owner task to close the SDK contexts; cancel it if it takes longer."""
        self._closing.set()
        owner = self._owner
        if owner is None or owner.done():
            return
        await asyncio.wait({owner}, timeout=timeout)
        if not owner.done():
            owner.cancel()
            await asyncio.wait({owner}, timeout=timeout)

    # -- requests --------------------------------------------------------------

    async def _call(self, what: str, call: Callable[[], Awaitable[T]], *, repeatable: bool) -> T:
        if self._dead.is_set() or self._closing.is_set():
            raise NotDelivered(f"MCP {what}: the connection is already gone; not sent")
        self._in_flight += 1
        try:
            async with asyncio.timeout(self.call_timeout + 2.0):
                return await call()
        except TimeoutError:
            # The SDK's own read timeout should have fired first: the link is stuck.
            self._dead.set()
            if repeatable:
                raise TimeoutError(
                    f"MCP {what} got no answer within {self.call_timeout:g}s"
                ) from None
            raise OutcomeUnknown(f"MCP {what} got no answer; it may have run") from None
        except MCPError as exc:
            raise await self._translate(what, exc, repeatable) from exc
        finally:
            self._in_flight -= 1

    async def _translate(self, what: str, exc: MCPError, repeatable: bool) -> Exception:
        text = exc.message.lower()
        if (exc.code == INVALID_REQUEST and text in _SESSION_GONE) or (
            self.adopted and exc.code == METHOD_NOT_FOUND and text == "not found"
        ):
            self._dead.set()
            return SessionTerminated(f"MCP {what}: the upstream ended the session ({exc.message})")
        if exc.code == CONNECTION_CLOSED:
            self._dead.set()
            owner = self._owner
            if owner is not None and not owner.done():
                await asyncio.wait({owner}, timeout=1.0)
            cause = self._cause
            if isinstance(cause, httpx2.ConnectError) and self._in_flight == 1:
                return NotDelivered(f"MCP {what} not sent: {_brief(cause)}")
            if repeatable:
                return ConnectionDropped(f"MCP connection lost during {what}: {_brief(cause)}")
            return OutcomeUnknown(f"MCP connection lost during {what}; it may have run")
        if exc.code == REQUEST_TIMEOUT:
            if repeatable:
                return TimeoutError(f"MCP {what} got no answer within {self.call_timeout:g}s")
            return OutcomeUnknown(f"MCP {what} got no answer in time; it may have run")
        if exc.code == INTERNAL_ERROR and not repeatable:
            return OutcomeUnknown(f"MCP {what} failed on the server: {exc.message}")
        return exc

    def is_repeatable(self, tool: str) -> bool:
        """True when `tool` declares itself read-only or idempotent."""
        return self.repeatable_tools.get(tool, False)

    def _session(self) -> ClientSession:
        if self.session is None:
            raise NotDelivered("MCP connection is not open")
        return self.session

    async def call_tool(
        self, name: str, arguments: Mapping[str, Any] | None = None
    ) -> types.CallToolResult:
        """``tools/call``; a tool error comes back as ``is_error``, not raised."""
        session = self._session()
        return await self._call(
            f"tools/call {name}",
            lambda: session.call_tool(name, dict(arguments or {})),
            repeatable=self.is_repeatable(name),
        )

    async def list_tools(self) -> types.ListToolsResult:
        """``tools/list`` (and the tools' retry annotations are refreshed)."""
        session = self._session()
        listing = await self._call("tools/list", session.list_tools, repeatable=True)
        self._absorb(listing)
        return listing

    async def read_resource(self, uri: str) -> types.ReadResourceResult:
        """``resources/read``."""
        session = self._session()
        return await self._call(
            "resources/read", lambda: session.read_resource(uri), repeatable=True
        )

    async def get_prompt(
        self, name: str, arguments: Mapping[str, str] | None = None
    ) -> types.GetPromptResult:
        """``prompts/get``."""
        session = self._session()
        return await self._call(
            "prompts/get",
            lambda: session.get_prompt(name, dict(arguments or {})),
            repeatable=True,
        )

    async def ping(self) -> None:
        """``ping``: the cheapest round trip of the handshake revisions."""
        session = self._session()
        await self._call("ping", session.send_ping, repeatable=True)

    async def discover(self) -> None:
        """``server/discover`` at the negotiated revision: the 2026-07-28 revision's
        replacement for ``ping`` (``ClientSession.discover`` would answer from its
        cache without a round trip)."""
        session = self._session()
        revision = session.protocol_version
        assert revision is not None
        await self._call(
            "server/discover", lambda: session.send_discover(revision), repeatable=True
        )

    async def probe(self) -> None:
        """One health round trip: ``server/discover`` where it replaced ``ping``, else ``ping``."""
        if self.discovered:
            await self.discover()
        else:
            await self.ping()


def _retrieve(future: asyncio.Future[None]) -> None:
    # The outcome is read by `open`, or by nobody when `open` timed out first.
    if not future.cancelled():
        future.exception()


def _brief(exc: BaseException | None) -> str:
    if exc is None:
        return "the link closed"
    return f"{type(exc).__name__}: {exc}".rstrip(": ")


def _secret_parts(
    target: McpTarget, secret: SecretStr | None
) -> tuple[dict[str, str], dict[str, str]]:
    """(headers, env) from the sealed secret: a bearer token or a JSON object."""
    raw = secret.get_secret_value() if secret is not None else ""
    if not raw:
        return {}, {}
    if raw.lstrip().startswith("{"):
        try:
            parsed = json.loads(raw)
        except ValueError:
            raise InvalidInput("the MCP upstream's secret is not valid JSON") from None
        if not isinstance(parsed, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in parsed.items()
        ):
            raise InvalidInput("the MCP upstream's secret must map names to strings")
        values: dict[str, str] = parsed
        return ({}, values) if target.transport == "stdio" else (values, {})
    if target.transport == "stdio":
        raise InvalidInput("a stdio upstream's secret is a JSON object of environment variables")
    return {"Authorization": f"Bearer {raw}"}, {}


def secret_values(secret: SecretStr | None) -> list[str]:
    """Every string in the secret that must never be shown (the token, each value)."""
    raw = secret.get_secret_value() if secret is not None else ""
    if not raw:
        return []
    values = [raw]
    with contextlib.suppress(ValueError, AttributeError):
        values.extend(v for v in json.loads(raw).values() if isinstance(v, str) and v)
    return sorted(set(values), key=len, reverse=True)


class McpConnector:
    """Opens MCP connections for the pool (`Connector` for kind ``mcp``).

    Args:
        call_timeout: every request's bound, in seconds.
        connect_timeout: spawn or connect plus handshake, in seconds.
        errlog: where stdio servers' stderr goes (the process's stderr by default).

    .. versionadded:: 0.1
    """

    kind = "mcp"
    #: MCP multiplexes requests on one connection: the pool need not serialise them.
    concurrent = True
    #: Many MCP servers take no credential: an upstream may be registered without one.
    secret_optional = True

    def __init__(
        self,
        *,
        call_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        errlog: TextIO | None = None,
    ) -> None:
        self.call_timeout = call_timeout
        self.connect_timeout = connect_timeout
        self._errlog = errlog or sys.__stderr__ or sys.stderr

    @classmethod
    def from_settings(cls, settings: Any) -> McpConnector:
        """A connector with the timeouts of an `UpstreamSettings`."""
        return cls(
            call_timeout=settings.call_timeout.total_seconds(),
            connect_timeout=settings.connect_timeout.total_seconds(),
        )

    async def connect(
        self, spec: UpstreamSpec, secret: SecretStr | None, *, resume: Any = None
    ) -> McpConnection:
        """Start or reach the server and do the handshake (or continue `resume`).

        A session to continue that the upstream no longer knows is replaced by
        a new handshake in the same call.

        Raises:
            InvalidInput: not an MCP spec, or a malformed secret.
            TimeoutError, StartFailed, httpx2 errors, MCPError: see `McpConnection.open`.
        """
        if spec.mcp is None:
            raise InvalidInput(f"upstream {spec.name!r} is not an MCP upstream")
        headers, env = _secret_parts(spec.mcp, secret)
        handoff = _handoff_of(resume) if spec.mcp.transport == "streamable_http" else None
        if handoff is not None:
            conn = self._connection(spec, headers, env, handoff)
            try:
                await conn.open()
                return conn
            except SessionTerminated:
                logger.info(
                    "MCP upstream %s: session to continue is gone; new handshake", spec.name
                )
        conn = self._connection(spec, headers, env, None)
        await conn.open()
        return conn

    def _connection(
        self,
        spec: UpstreamSpec,
        headers: dict[str, str],
        env: dict[str, str],
        resume: Handoff | None,
    ) -> McpConnection:
        assert spec.mcp is not None
        return McpConnection(
            spec,
            spec.mcp,
            call_timeout=self.call_timeout,
            connect_timeout=self.connect_timeout,
            headers=headers,
            env=env,
            errlog=self._errlog,
            resume=resume,
        )

    async def probe(self, connection: McpConnection) -> None:
        """``ping``, or ``server/discover`` on a 2026-07-28 connection, under the call timeout."""
        await connection.probe()

    async def close(self, connection: McpConnection) -> None:
        """Close the SDK client in its owner task (a stdio child is stopped); never raises."""
        await connection.close(7.0)

    def handoff(self, connection: McpConnection) -> dict[str, Any] | None:
        """The record's resume state of a Streamable HTTP connection (None otherwise)."""
        handoff = connection.handoff()
        return None if handoff is None else handoff.model_dump(mode="json")

    def result_fault(self, value: object) -> Exception | None:
        """None: a tool's ``is_error`` is the tool's answer, not a fault of the upstream."""
        return None

    def classify(self, exc: BaseException) -> Verdict | None:
        """The MCP-specific verdict of `exc`, or None to use the common classifier."""
        return classify_mcp(exc)

    def redact(self, text: str, secret: SecretStr | None) -> str:
        """`text` with the token, or every value of a JSON secret, masked."""
        for value in secret_values(secret):
            text = text.replace(value, "***")
        return text


class _SharedSessionDispatcher(JSONRPCDispatcher[Any]):
    """The SDK's JSON-RPC dispatcher, with request ids that start at a random point.

    Several processes continue one upstream session (its ``Mcp-Session-Id`` travels
    in the record's handoff), and the server tells the requests in flight on a
    session apart by their ids alone: with every process counting from 1, two calls
    at once would share an id and one would get the other's answer, or a 500
    ("Session terminated before the request completed"). Random starts 2**52 wide
    (ids stay exact in JSON) make a clash as good as impossible.
    """

    def __init__(self, read: Any, write: Any) -> None:
        super().__init__(read, write)
        self._next_id = secrets.randbelow(2**52)


def _handoff_of(resume: Any) -> Handoff | None:
    if resume is None:
        return None
    try:
        return Handoff.model_validate(resume)
    except ValidationError:
        logger.warning("ignoring a malformed MCP resume state")
        return None


_MCP_CODES: dict[int, Verdict] = {
    METHOD_NOT_FOUND: Verdict(Action.FAIL, False, "method_not_found"),
    INVALID_PARAMS: Verdict(Action.FAIL, False, "invalid_params"),
    INVALID_REQUEST: Verdict(Action.FAIL, False, "invalid_request"),
    INTERNAL_ERROR: Verdict(Action.RETRY, True, "server_error"),
    REQUEST_TIMEOUT: Verdict(Action.RECONNECT, True, "timeout"),
    CONNECTION_CLOSED: Verdict(Action.RECONNECT, True, "connection_lost"),
}


_OWN_FAULTS: tuple[tuple[type[BaseException], Verdict], ...] = (
    (SessionTerminated, Verdict(Action.RECONNECT, False, "session_terminated")),
    (NotDelivered, Verdict(Action.RECONNECT, True, "not_delivered")),
    (OutcomeUnknown, Verdict(Action.FAIL, True, "outcome_unknown")),
    (StartFailed, Verdict(Action.FAIL, False, "start_failed")),
)


def classify_mcp(exc: BaseException) -> Verdict | None:
    """MCP's faults: session ends, delivery, JSON-RPC codes, the SDK's httpx2 errors.

    Returns None for faults the common classifier knows (timeouts, OS errors).
    """
    for kind, verdict in _OWN_FAULTS:
        if isinstance(exc, kind):
            return verdict
    if isinstance(exc, MCPError):
        return _MCP_CODES.get(exc.code, Verdict(Action.FAIL, False, f"mcp_error_{exc.code}"))
    if isinstance(exc, httpx2.HTTPError):
        return _classify_http(exc)
    if isinstance(exc, RuntimeError) and "protocol version" in str(exc):
        return Verdict(Action.FAIL, False, "protocol_version")
    return None


def _classify_http(exc: httpx2.HTTPError) -> Verdict | None:
    """The SDK's HTTP client errors (httpx2): network faults, though no ``OSError``."""
    if isinstance(exc, httpx2.HTTPStatusError):
        status = exc.response.status_code
        if status in (401, 403):
            return Verdict(Action.FAIL, False, "auth_failed")
        if status >= 500:
            return Verdict(Action.RECONNECT, True, "unavailable")
        return Verdict(Action.FAIL, False, f"http_{status}")
    if isinstance(exc, httpx2.ConnectTimeout | httpx2.TimeoutException):
        return Verdict(Action.RECONNECT, True, "timeout")
    if isinstance(exc, httpx2.ConnectError):
        return Verdict(Action.RECONNECT, True, "refused")
    if isinstance(exc, httpx2.TransportError):
        return Verdict(Action.RECONNECT, True, "network_error")
    return None


__all__ = [
    "CLIENT_INFO",
    "Handoff",
    "McpConnection",
    "McpConnector",
    "NotDelivered",
    "OutcomeUnknown",
    "SessionTerminated",
    "StartFailed",
    "classify_mcp",
    "secret_values",
]
