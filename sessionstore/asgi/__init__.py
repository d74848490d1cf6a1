"""Sessions for ASGI apps: plain-ASGI middleware plus FastAPI dependencies.

See ``docs/server.md`` for Starlette and FastAPI examples.
"""

from __future__ import annotations

from ._body import BodyLimits, BodyReadLimits, BodyReads
from ._cookie import SessionCookie
from ._inflight import DrainResult, InFlightRequests
from ._middleware import RENEWED_HEADER, SessionMiddleware
from ._problems import Problem, etag, problem_for

__all__ = [
    "RENEWED_HEADER",
    "BodyLimits",
    "BodyReadLimits",
    "BodyReads",
    "DrainResult",
    "InFlightRequests",
    "Problem",
    "SessionCookie",
    "SessionMiddleware",
    "etag",
    "problem_for",
]
