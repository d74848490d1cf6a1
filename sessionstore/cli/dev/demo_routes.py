"""``/demo/upstreams``: a guarded call to a simulated upstream, for the dev fleet and tests.

Not part of the reference server: `sessionstore serve` mounts this router
(`mount_demo_routes`) only when ``SESSIONSTORE_DEMO_ROUTES`` is on, which the
dev fleet sets for its replicas. The client says how the upstream answers,
everything else is the real breaker path. The call runs under
``Breaker.guard()`` of this replica's registry, its outcome is recorded in the
fleet-wide window like any guarded call's, and a refusal is the real
`BreakerOpen`. It is also the shape an app's own route takes to guard its
upstream calls. Breakers are named ``demo:<upstream>``, so these routes can
never touch a real upstream's breaker, and one process follows at most
`MAX_DEMO_BREAKERS` of them.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, FastAPI, Path
from pydantic import BaseModel, ConfigDict

from ...breaker import BreakerState
from ...exceptions import InvalidInput, UpstreamError
from ...server._state import State
from ...server.routes._common import problems

router = APIRouter(tags=["demo"])

#: Distinct demo breakers one process will hold (each is followed until shutdown).
MAX_DEMO_BREAKERS = 16
PREFIX = "demo:"

Upstream = Annotated[
    str, Path(pattern=r"^[a-z0-9-]{1,32}$", description="A made-up upstream name, e.g. flaky.")
]


class DemoCall(BaseModel):
    """Body of ``POST /demo/upstreams/{upstream}/call``: how the simulated upstream answers."""

    model_config = ConfigDict(extra="forbid")

    outcome: Literal["success", "failure"]


class DemoCallOut(BaseModel):
    """A guarded call to the simulated upstream that went through."""

    breaker: str
    outcome: Literal["success"]
    #: True when this call was one of the fleet's half-open probes.
    probe: bool
    #: This replica's view of the breaker after the call.
    state: BreakerState


def mount_demo_routes(app: FastAPI) -> FastAPI:
    """Add the demo route to a reference-server app (from `create_app`); returns `app`."""
    app.include_router(router)
    return app


@router.post(
    "/demo/upstreams/{upstream}/call",
    summary="Guarded call to a simulated upstream (demo)",
    responses={
        502: {"description": "The simulated upstream failed (counted by the breaker)"},
        **problems(422, 503),
    },
)
async def call_upstream(upstream: Upstream, body: DemoCall, state: State) -> DemoCallOut:
    """Call the made-up upstream `upstream` through breaker ``demo:<upstream>``.

    ``{"outcome": "failure"}``: the upstream fails (502 ``upstream_error``, counted
    against the breaker); ``"success"``: it answers (200). While the breaker refuses
    (open, forced open, or half-open with every probe slot taken): 503
    ``breaker_open`` with Retry-After, and the upstream is not called.
    """
    registry = state.breakers
    name = PREFIX + upstream
    held = [n for n in registry.names() if n.startswith(PREFIX)]
    if name not in held and len(held) >= MAX_DEMO_BREAKERS:
        raise InvalidInput(f"this replica already follows {MAX_DEMO_BREAKERS} demo upstreams")
    breaker = await registry.get(name)
    async with breaker.guard() as attempt:
        if body.outcome == "failure":
            # Leaves the guarded block: the breaker counts it as the upstream's failure.
            raise UpstreamError(name, "the demo upstream failed, as asked")
    return DemoCallOut(breaker=name, outcome="success", probe=attempt.is_probe, state=breaker.state)
