"""``/sessions/{id}/upstreams``: a session's upstream connections (IMAP...) and their health.

Who may call (`sessionstore.server._access.session_caller`): the session's own
client — the request names this session in the session header (or signed
cookie), so it passes through `SessionMiddleware` like any session request
(lease, limits) — a backend with a service token, or an operator with
``Authorization: Bearer $SESSIONSTORE_ADMIN_TOKEN``. A session id is a bearer
secret, so its holder may manage its own upstreams with its own secret, which
is encrypted before it is stored. Two things reach beyond the session and
need the admin token: a credential *reference* (``env:``/``file:``
resolves a secret of the server's own environment, so a client could have
the server send any of them to a host it picked) and a chosen breaker name
(a session could feed its failures into another upstream's shared breaker).
An MCP server by command (stdio) needs it too, and the command must be one
``SESSIONSTORE_UPSTREAM_ALLOWED_COMMANDS`` lists: every replica and worker
that connects runs it. An MCP server by URL is registered like an IMAP
account (its host must pass ``SESSIONSTORE_UPSTREAM_ALLOWED_HOSTS``).

``GET .../health`` reads the record in Redis (what the fleet last saw: no
upstream I/O, the same on every replica); ``?probe=true`` probes from this
replica now (IMAP NOOP; MCP ping, or server/discover in the 2026-07-28
revision). Secrets never appear in answers, validation errors or logs.
"""

from __future__ import annotations

import fnmatch
import logging
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Response
from pydantic import ValidationError

from ..._ids import short_id
from ...exceptions import InvalidInput, UpstreamNotFound
from ...upstream import McpTarget, UpstreamRecord, UpstreamSpec, UpstreamState, verify_upstream
from .._access import Caller, SessionCaller
from .._state import ServerState, State
from ..upstream_models import (
    UPSTREAM_NAME_PATTERN,
    RegisterMcpHttp,
    RegisterMcpStdio,
    RegisterUpstream,
    UpstreamBody,
    UpstreamBreakerOut,
    UpstreamHealthOut,
    UpstreamList,
    UpstreamOut,
)
from ._common import SESSION_ID_DOC, SESSION_PROBLEMS, problems

logger = logging.getLogger("sessionstore.server")

SessionId = Annotated[str, Path(description=SESSION_ID_DOC)]
UpstreamName = Annotated[
    str,
    Path(
        pattern=UPSTREAM_NAME_PATTERN,
        max_length=256,
        description="The session's name for the upstream, e.g. mail.",
    ),
]
#: The route whose body carries a secret: its validation errors never echo input.
REGISTER_PATH = "/sessions/{session_id}/upstreams/{name}"
#: Refusals every upstream route can give.
UPSTREAM_PROBLEMS = {
    401: {
        "description": "Neither a service or admin bearer token nor this session's id in "
        "the session header (its own client's way in)"
    },
    403: {"description": "Another session's header, or an admin-only field"},
    **problems(*SESSION_PROBLEMS, 422, 429),
}


def _allowed(state: ServerState, host: str) -> None:
    patterns = state.settings.upstream.allowed_hosts
    if patterns is None:
        return
    wanted = host.lower()
    for pattern in patterns.split(","):
        if pattern.strip() and fnmatch.fnmatchcase(wanted, pattern.strip().lower()):
            return
    raise InvalidInput(f"host {host} is not allowed (SESSIONSTORE_UPSTREAM_ALLOWED_HOSTS)")


def _allowed_command(state: ServerState, command: str) -> None:
    listed = state.settings.upstream.allowed_commands
    if listed is None:
        raise InvalidInput(
            "stdio MCP upstreams are not registered over REST unless "
            "SESSIONSTORE_UPSTREAM_ALLOWED_COMMANDS lists their command"
        )
    if command not in {entry.strip() for entry in listed.split(",")}:
        raise InvalidInput("command is not allowed (SESSIONSTORE_UPSTREAM_ALLOWED_COMMANDS)")


def _target(body: RegisterMcpHttp | RegisterMcpStdio) -> McpTarget:
    if isinstance(body, RegisterMcpStdio):
        return McpTarget(
            transport=body.transport,
            command=body.command,
            args=tuple(body.args),
            env=body.env,
            cwd=body.cwd,
            mode=body.mode,
        )
    return McpTarget(transport=body.transport, url=body.url, mode=body.mode)


def _spec(name: str, body: UpstreamBody) -> UpstreamSpec:
    try:
        if isinstance(body, RegisterUpstream):
            return UpstreamSpec(
                name=name,
                kind=body.kind,
                host=body.host,
                port=body.port,
                username=body.username,
                tls=body.tls,
                breaker=body.breaker,
            )
        return UpstreamSpec(name=name, kind="mcp", mcp=_target(body), breaker=body.breaker)
    except ValidationError as exc:
        # Field names only: the values are the client's and stay out of the answer.
        fields = ", ".join(str(error["loc"][0]) for error in exc.errors() if error["loc"])
        raise InvalidInput(f"invalid upstream fields: {fields}") from None


async def _record(state: ServerState, session_id: str, name: str) -> UpstreamRecord:
    pool = state.upstreams.pool
    record = await pool.records.get(session_id, name)
    if record is None:
        await state.store.get(session_id)  # 404 / 410 when the session is why
        # Removed elsewhere: a socket this replica still holds for it goes too (no I/O if none).
        await pool.release(session_id, name)
        raise UpstreamNotFound(name, "no upstream of this name is registered for the session")
    return record


async def _breaker(state: ServerState, record: UpstreamRecord) -> UpstreamBreakerOut:
    return UpstreamBreakerOut.of(await state.breakers.admin.status(record.spec.breaker_name))


async def register_upstream(
    session_id: SessionId,
    name: UpstreamName,
    body: UpstreamBody,
    caller: SessionCaller,
    state: State,
    verify: Annotated[
        bool,
        Query(
            description="Connect, log in and probe first (IMAP: NOOP; MCP: the handshake, "
            "then ping or server/discover); store only if that works."
        ),
    ] = False,
) -> UpstreamOut:
    """Create or replace the session's upstream `name` (state ``closed``, no connection yet):
    an IMAP account, or an MCP server by URL or (admin token only) by command.

    With ``verify=true`` the upstream is tried first and nothing is stored unless
    it takes the login: 422 ``upstream_rejected`` (a wrong password: not counted
    against the breaker), 503 ``upstream_unavailable`` or ``breaker_open`` with
    Retry-After; on success the record starts ``connected`` with the round trip.
    """
    if caller is not Caller.ADMIN and (body.credential_ref is not None or body.breaker):
        raise HTTPException(
            403,
            "credential_ref and breaker need the admin token: a reference resolves "
            "a secret of the server's environment, a breaker is shared by every session",
        )
    if isinstance(body, RegisterMcpStdio) and caller is not Caller.ADMIN:
        raise HTTPException(
            403, "a stdio MCP upstream needs the admin token: it runs a program on the fleet"
        )
    spec = _spec(name, body)
    if isinstance(body, RegisterMcpStdio):
        _allowed_command(state, body.command)
    else:
        _allowed(state, spec.endpoint[0])
    secret = body.secret if isinstance(body, RegisterUpstream) else body.sealed_secret()
    pool = state.upstreams.pool
    elapsed_ms = None
    if verify:
        await state.store.get(session_id)  # no upstream I/O for an ended session
        elapsed_ms = await verify_upstream(
            pool, spec, secret=secret, credential_ref=body.credential_ref
        )
    record = await pool.register(
        session_id, spec, secret=secret, credential_ref=body.credential_ref
    )
    if elapsed_ms is not None:
        record = await pool.records.update(
            session_id,
            name,
            state=UpstreamState.CONNECTED,
            success=True,
            response_time_ms=elapsed_ms,
        )
    logger.info(
        "session %s: upstream %s registered by %s (%s %s, credential %s%s)",
        short_id(session_id), name, caller.value, spec.kind, spec.address,
        record.credential.scheme if record.credential else "none",
        ", verified" if verify else "",
    )  # fmt: skip
    return UpstreamOut.of(record)


async def list_upstreams(
    session_id: SessionId, caller: SessionCaller, state: State
) -> UpstreamList:
    """Every upstream record of the session, by name (one read from Redis)."""
    records = await state.upstreams.pool.records.list(session_id)
    if not records:
        await state.store.get(session_id)  # 404 / 410 rather than an empty list
    return UpstreamList(upstreams=[UpstreamOut.of(records[n]) for n in sorted(records)])


async def read_upstream(
    session_id: SessionId, name: UpstreamName, caller: SessionCaller, state: State
) -> UpstreamOut:
    """State, last success and error, attempts, next reconnect, last round trip."""
    return UpstreamOut.of(await _record(state, session_id, name))


async def upstream_health(
    session_id: SessionId,
    name: UpstreamName,
    caller: SessionCaller,
    state: State,
    probe: Annotated[
        bool,
        Query(
            description="Probe from this replica now (IMAP: NOOP; MCP: ping, or server/discover "
            "in the 2026-07-28 revision) instead of reading the record."
        ),
    ] = False,
) -> UpstreamHealthOut:
    """The health-check fields. By default from the record in Redis (the fleet's last word,
    no upstream I/O) and the breaker's state; ``probe=true`` checks the upstream now
    through this replica's pool (opening a connection if it holds none) and stores
    the round trip in the record. An unhealthy upstream is a 200 with
    ``healthy: false``: the health was read."""
    record = await _record(state, session_id, name)
    if not probe:
        return UpstreamHealthOut.from_record(record, await _breaker(state, record))
    report = await state.upstreams.pool.health(session_id, name)
    after = await state.upstreams.pool.records.get(session_id, name)
    return UpstreamHealthOut.from_probe(report, after, await _breaker(state, record))


async def remove_upstream(
    session_id: SessionId, name: UpstreamName, caller: SessionCaller, state: State
) -> Response:
    """Delete the record and close this replica's socket for it. A replica that holds
    another socket for it drops it when its next write finds the record gone (within
    ``record_interval`` while in use), else at its refresh age or the session's end."""
    pool = state.upstreams.pool
    if not await pool.records.remove(session_id, name):
        raise UpstreamNotFound(name, "no upstream of this name is registered for the session")
    await pool.release(session_id, name)  # the socket here; the record is gone already
    logger.info("session %s: upstream %s removed by %s", short_id(session_id), name,
                caller.value)  # fmt: skip
    return Response(status_code=204)


def router_for(header: str) -> APIRouter:
    """The upstream routes, documenting `header` as the owner's session header."""
    routes = APIRouter(tags=["upstreams"])
    # The schema's security names the admin bearer token; the other way in, the
    # session's own id in `header`, is said in the 401 answer rather than declared:
    # the session middleware refuses a malformed or unknown id (400, 404) before the
    # route runs, so as a parameter a fuzzer's schema-valid values would be refused,
    # and as a security scheme its bad values would not answer 401.
    common: dict[str, Any] = {"responses": UPSTREAM_PROBLEMS}
    many = "/sessions/{session_id}/upstreams"
    routes.add_api_route(
        REGISTER_PATH,
        register_upstream,
        methods=["PUT"],
        summary="Register an upstream connection",
        **{**common, "responses": {**UPSTREAM_PROBLEMS, 502: {"description": "Not understood"}}},
    )
    routes.add_api_route(
        many, list_upstreams, methods=["GET"], summary="List a session's upstreams", **common
    )
    routes.add_api_route(
        REGISTER_PATH, read_upstream, methods=["GET"], summary="Read one upstream", **common
    )
    routes.add_api_route(
        f"{REGISTER_PATH}/health",
        upstream_health,
        methods=["GET"],
        summary="An upstream connection's health",
        **common,
    )
    routes.add_api_route(
        REGISTER_PATH,
        remove_upstream,
        methods=["DELETE"],
        status_code=204,
        summary="Remove an upstream connection",
        **common,
    )
    return routes
