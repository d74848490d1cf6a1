"""``/sessions``: create, read, update state, delete, expire, resume, rotate, list by user.

Who may call (`sessionstore.server._access`): creating and listing by user need
a service (or admin) token; the routes about one session, that session's own
client (its id in the session header or signed cookie) or a service token.

Reads send the version as a strong ``ETag``; state writes honour ``If-Match``
(412 with the current ETag on mismatch), so a client can do its own
compare-and-set loop across replicas without losing updates.
"""

from __future__ import annotations

from typing import Annotated, Any, NoReturn

from fastapi import APIRouter, Header, Path, Query, Response

from ..._ids import NAME_PATTERN
from ...asgi import etag
from ...store import Session, SessionStore, Tombstone
from ...store._replies import gone_error
from .._access import ServiceCaller, SessionCaller
from .._state import State
from ..models import CreateSession, SessionList, SessionOut, StateUpdate, TouchOut, VersionOut
from ._common import SESSION_ID_DOC, SESSION_PROBLEMS, matches_etag, parse_if_match, problems

router = APIRouter(tags=["sessions"])

SessionId = Annotated[str, Path(description=SESSION_ID_DOC)]


def _send(response: Response, session: Session, header: str) -> SessionOut:
    response.headers["ETag"] = etag(session.version)
    response.headers[header] = session.id
    return SessionOut.of(session)


@router.post(
    "/sessions",
    status_code=201,
    summary="Create a session",
    responses=problems(413, 422, 503),
)
async def create_session(
    caller: ServiceCaller, body: CreateSession, response: Response, state: State
) -> SessionOut:
    """Create a session (service token); its id is in the body, the ``Location`` and the
    session header."""
    session = await state.store.create(
        user_id=body.user_id,
        conversation_id=body.conversation_id,
        metadata=body.metadata,
        state=body.state,
        idle_timeout=body.idle_timeout(),
        absolute_lifetime=body.absolute_lifetime(),
    )
    response.headers["Location"] = f"/sessions/{session.id}"
    return _send(response, session, state.settings.server.session_header)


@router.get(
    "/sessions/{session_id}",
    summary="Read a session",
    response_model=SessionOut,
    responses={304: {"description": "Not modified (If-None-Match)"}, **problems(*SESSION_PROBLEMS)},
)
async def read_session(
    session_id: SessionId,
    caller: SessionCaller,
    response: Response,
    state: State,
    if_none_match: Annotated[str | None, Header(max_length=1024)] = None,
) -> Any:
    """The session, without touching it. Ended ids answer 410 naming their successor."""
    session = await state.store.get(session_id)
    tag = etag(session.version)
    if matches_etag(if_none_match, tag):
        return Response(status_code=304, headers={"ETag": tag})
    return _send(response, session, state.settings.server.session_header)


@router.patch(
    "/sessions/{session_id}/state",
    summary="Set and delete state attributes",
    responses=problems(*SESSION_PROBLEMS, 409, 412, 413, 422),
)
async def update_state(
    session_id: SessionId,
    caller: SessionCaller,
    body: StateUpdate,
    response: Response,
    state: State,
    if_match: Annotated[str | None, Header(max_length=1024)] = None,
) -> VersionOut:
    """Write only the named attributes, atomically; with ``If-Match`` only at that version."""
    version = await state.store.set_state(
        session_id,
        body.values,
        delete=body.delete,
        metadata=body.metadata,
        expected_version=parse_if_match(if_match),
    )
    response.headers["ETag"] = etag(version)
    return VersionOut(id=session_id, version=version)


@router.post(
    "/sessions/{session_id}/touch",
    summary="Mark activity",
    responses=problems(*SESSION_PROBLEMS),
)
async def touch_session(session_id: SessionId, caller: SessionCaller, state: State) -> TouchOut:
    """Slide the idle deadline."""
    deadline = await state.store.touch(session_id)
    return TouchOut(id=session_id, idle_deadline=deadline)


async def _ended_already(store: SessionStore, session_id: str) -> NoReturn:
    """Raise the 410 of an id that had already ended (or 404 once its tombstone lapsed)."""
    found = await store.lookup(session_id)
    superseded = found.superseded_by if isinstance(found, Tombstone) else None
    raise gone_error(session_id, found.status.value, superseded)


@router.delete(
    "/sessions/{session_id}",
    status_code=204,
    summary="Close a session",
    responses=problems(*SESSION_PROBLEMS),
)
async def delete_session(session_id: SessionId, caller: SessionCaller, state: State) -> Response:
    """Close the session; its id answers 410 ``session_closed`` for the retention period."""
    if not await state.store.delete(session_id):
        await _ended_already(state.store, session_id)
    return Response(status_code=204)


@router.post(
    "/sessions/{session_id}/expire",
    status_code=204,
    summary="Expire a session now",
    responses=problems(*SESSION_PROBLEMS),
)
async def expire_session(session_id: SessionId, caller: SessionCaller, state: State) -> Response:
    """Expire the session as the sweeper would; it can then be resumed."""
    if not await state.store.expire(session_id):
        await _ended_already(state.store, session_id)
    return Response(status_code=204)


@router.post(
    "/sessions/{session_id}/resume",
    summary="Resume after a disconnect",
    responses=problems(*SESSION_PROBLEMS),
)
async def resume_session(
    session_id: SessionId, caller: SessionCaller, response: Response, state: State
) -> SessionOut:
    """The same session if still active, else its successor (``resumed_from`` names the old id)."""
    session = await state.store.resume(session_id)
    return _send(response, session, state.settings.server.session_header)


@router.post(
    "/sessions/{session_id}/rotate",
    summary="Give the session a new id",
    responses=problems(*SESSION_PROBLEMS),
)
async def rotate_session(
    session_id: SessionId, caller: SessionCaller, response: Response, state: State
) -> SessionOut:
    """Move the session to a new id; the old id answers 410 ``session_rotated``."""
    session = await state.store.rotate(session_id)
    response.headers["Location"] = f"/sessions/{session.id}"
    return _send(response, session, state.settings.server.session_header)


@router.get(
    "/users/{user_id}/sessions",
    summary="List a user's active sessions",
    responses=problems(422, 503),
)
async def list_user_sessions(
    caller: ServiceCaller,
    user_id: Annotated[str, Path(pattern=NAME_PATTERN, max_length=256)],
    state: State,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> SessionList:
    """The user's active sessions, oldest deadline first."""
    sessions = await state.store.list_for_user(user_id, limit=limit)
    return SessionList(user_id=user_id, sessions=[SessionOut.of(s) for s in sessions])
