"""``/session``: the session named by the request's session header (or cookie).

These routes are served through `SessionMiddleware`, which has already found
the session, taken its request lease (so the fleet-wide per-session limit
applies) and answered unknown, ended and over-limit ids. The header is added
to the OpenAPI operations so clients and fuzzers know to send it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from ...asgi.dependencies import CurrentSession
from .._state import State
from ..models import SessionOut, WaitOut
from ._common import SESSION_PROBLEMS, problems

#: How often a waiting request re-reads the session.
_POLL_SECONDS = 0.25


def router(header: str) -> APIRouter:
    """The ``/session`` routes, documenting `header` as their session header."""
    documented: dict[str, Any] = {
        "parameters": [
            {
                "name": header,
                "in": "header",
                "required": True,
                "description": "The session id (or send the signed session cookie).",
                "schema": {"type": "string", "maxLength": 64},
            }
        ]
    }
    routes = APIRouter(tags=["current session"])
    responses = problems(*SESSION_PROBLEMS, 429)

    @routes.get(
        "/session",
        summary="The current session",
        openapi_extra=documented,
        responses=responses,
    )
    async def current(session: CurrentSession) -> SessionOut:
        """The session the request's header names (touched by the request lease)."""
        return SessionOut.of(session)

    @routes.get(
        "/session/wait",
        summary="Wait for the state to change",
        openapi_extra=documented,
        responses=responses,
    )
    async def wait(
        session: CurrentSession,
        request: Request,
        state: State,
        after_version: Annotated[int, Query(ge=0, le=2**53)],
        timeout: Annotated[float, Query(gt=0, le=60)] = 25.0,
    ) -> WaitOut:
        """Long poll: answer as soon as the version passes `after_version`, or at `timeout`.

        The request holds its lease while it waits, so it counts against the
        session's concurrent request limit on every replica.
        """
        deadline = time.monotonic() + timeout
        current = session
        while current.version <= after_version and time.monotonic() < deadline:
            if await request.is_disconnected():
                break
            await asyncio.sleep(min(_POLL_SECONDS, max(0.0, deadline - time.monotonic())))
            current = await state.store.get(session.id)
        return WaitOut(changed=current.version > after_version, session=SessionOut.of(current))

    return routes
