"""``/breakers``: the fleet's circuit breakers, read from Redis, and manual control.

Reads are open, like ``/metrics`` (which carries the same names and states).
Force open, force closed and reset need ``Authorization: Bearer
$SESSIONSTORE_ADMIN_TOKEN`` (403 while it is unset) and a body naming the
``actor`` and the ``reason``; `BreakerAdmin` records both with Redis time in
the breaker's audit stream and announces the new state to every replica.
The token is one shared secret, so the actor is what the caller says it is:
the log line of every action also names the client's address.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.convertors import PathConvertor, register_url_convertor

from ..._ids import NAME_PATTERN
from ...asgi import Problem
from ...breaker import BreakerRegistry, BreakerSnapshot, BreakerStatus
from .._auth import Credentials, Role, require_role
from .._state import ServerState, State
from ..breaker_models import (
    BreakerAction,
    BreakerDetail,
    BreakerList,
    BreakerOut,
    BreakerReset,
    BreakerStatusOut,
    LocalViewOut,
)
from ..models import ProblemOut
from ._common import problems

logger = logging.getLogger("sessionstore.server")

router = APIRouter(tags=["breakers"])

#: The control routes' suffixes: ``/breakers/x/reset`` is breaker x's reset, not a read
#: of a breaker named ``x/reset`` (so a wrong method there lists POST alone in Allow).
_ACTIONS = ("force-open", "force-closed", "reset")


class _ReadableName(PathConvertor):
    """A breaker name as ``GET /breakers/{name}`` reads it: ``/`` allowed, no action suffix."""

    regex = rf"(?!.*/(?:{'|'.join(_ACTIONS)})$).+"


register_url_convertor("breaker", _ReadableName())

#: ``:path``: a breaker name may hold ``/``. Checked again before it reaches a key.
BreakerName = Annotated[
    str,
    Path(
        pattern=NAME_PATTERN,
        max_length=256,
        description="The breaker's name, e.g. imap:imap.mail.me.com:993.",
    ),
]
#: Refusals of the control endpoints.
CONTROL_PROBLEMS = {
    401: {"description": "Missing or wrong bearer token"},
    403: {"description": "No admin token configured (SESSIONSTORE_ADMIN_TOKEN)"},
    **problems(422, 503),
}


async def require_admin(state: State, credentials: Credentials) -> None:
    """Dependency of the control endpoints: the admin bearer token.

    Dependencies run before the body's fields are validated: an unauthenticated
    caller gets 401/403, not a description of what its body lacks.
    """
    require_role(
        state.access,
        credentials,
        Role.ADMIN,
        disabled="breaker control disabled: set SESSIONSTORE_ADMIN_TOKEN",
    )


def _status_out(state: ServerState, status: BreakerStatus) -> BreakerStatusOut:
    probes = state.breakers.settings.half_open_probes
    return BreakerStatusOut.of_status(status, probes_allowed=probes)


@router.get("/breakers", summary="List the breakers", responses=problems(422, 503))
async def list_breakers(
    state: State,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> BreakerList:
    """Every breaker used or steered within the retention period (the first `limit` by
    name), with its fleet-wide state, window and probes (one batch read from Redis)."""
    admin = state.breakers.admin
    known = sorted(name for name, _ in await admin.names())
    names = known[:limit]
    statuses = await admin.scripts.read_many(names)
    return BreakerList(
        breakers=[_status_out(state, statuses[name]) for name in names],
        known=len(known),
        staleness_bound_seconds=state.breakers.settings.staleness_bound.total_seconds(),
    )


async def _local_view(registry: BreakerRegistry, name: str) -> LocalViewOut | None:
    if name not in registry.names():
        return None  # asking does not start following it
    breaker = await registry.get(name)  # held already: a dict lookup, no I/O
    snapshot = breaker.snapshot
    return LocalViewOut(
        state=breaker.state, generation=snapshot.gen, changed_at=snapshot.changed_at
    )


def _acted(request: Request, action: str, snapshot: BreakerSnapshot, body: Any) -> BreakerOut:
    client = request.client.host if request.client is not None else "?"
    logger.warning(
        "breaker %s: %s by %r from %s (%r) -> %s",
        snapshot.name,
        action,
        body.actor,
        client,
        body.reason,
        snapshot.state,
    )
    return BreakerOut.of(snapshot)


@router.post(
    "/breakers/{name:path}/force-open",
    summary="Isolate an upstream (admin token)",
    responses=CONTROL_PROBLEMS,
    dependencies=[Depends(require_admin)],
)
async def force_open(
    name: BreakerName, body: BreakerAction, request: Request, state: State
) -> BreakerOut:
    """Every replica refuses calls through this breaker until ``reset`` or ``force-closed``
    (within the staleness bound). Any valid name: an upstream can be isolated before use."""
    snapshot = await state.breakers.force_open(name, actor=body.actor, reason=body.reason)
    return _acted(request, "force_open", snapshot, body)


@router.post(
    "/breakers/{name:path}/force-closed",
    summary="Hold a breaker closed (admin token)",
    responses=CONTROL_PROBLEMS,
    dependencies=[Depends(require_admin)],
)
async def force_closed(
    name: BreakerName, body: BreakerAction, request: Request, state: State
) -> BreakerOut:
    """Calls pass on every replica and nothing is recorded until ``reset`` or
    ``force-open`` (override a breaker that trips on a false alarm)."""
    snapshot = await state.breakers.force_closed(name, actor=body.actor, reason=body.reason)
    return _acted(request, "force_closed", snapshot, body)


@router.post(
    "/breakers/{name:path}/reset",
    summary="Back to automatic (admin token)",
    responses=CONTROL_PROBLEMS,
    dependencies=[Depends(require_admin)],
)
async def reset(
    name: BreakerName, body: BreakerReset, request: Request, state: State
) -> BreakerOut:
    """Closed, with an empty window, judged automatically again."""
    snapshot = await state.breakers.reset(name, actor=body.actor, reason=body.reason)
    return _acted(request, "reset", snapshot, body)


@router.get(
    "/breakers/{name:breaker}",
    summary="Read one breaker",
    response_model=BreakerDetail,
    responses={404: {"model": ProblemOut}, **problems(422, 503)},
)
async def read_breaker(
    name: BreakerName,
    state: State,
    events: Annotated[int, Query(ge=0, le=1000)] = 20,
) -> Any:
    """State, window figures and probes from Redis; this replica's own view (``local``,
    what its guarded calls go by); the newest `events` transitions and manual actions.
    404 when Redis knows nothing of the breaker."""
    registry = state.breakers
    local = await _local_view(registry, name)  # before the read: it must not look fresher
    status = await registry.admin.status(name)
    if not status.known and name not in {known for known, _ in await registry.admin.names()}:
        return Problem(
            404, "breaker_not_found", f"no breaker named {name}", extra={"breaker": name}
        ).response()
    history, audit = await asyncio.gather(
        registry.admin.history(name, events), registry.admin.audit(name, events)
    )
    return BreakerDetail(
        breaker=_status_out(state, status), local=local, events=history, audit=audit
    )
