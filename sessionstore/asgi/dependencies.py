"""FastAPI dependencies over `SessionMiddleware` and the lifespan state.

::

    from sessionstore.asgi.dependencies import CurrentSession, Store

    @app.get("/profile")
    async def profile(session: CurrentSession, store: Store) -> dict:
        return session.state

`CurrentSession` answers 400 when the request named no session (the
middleware has already answered unknown, ended and over-limit ids).
`Breakers` is the `BreakerRegistry` a lifespan yielded as ``breakers``, for
routes that guard their own upstream calls (see ``docs/server.md``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from ..breaker import BreakerRegistry
from ..store import Session, SessionStore
from ._middleware import SESSION


def get_store(request: Request) -> SessionStore:
    """The `SessionStore` the lifespan yielded as ``session_store``.

    .. versionadded:: 0.1
    """
    store = getattr(request.state, "session_store", None)
    if not isinstance(store, SessionStore):
        raise RuntimeError("no session_store in the lifespan state")
    return store


def get_breakers(request: Request) -> BreakerRegistry:
    """The `BreakerRegistry` the lifespan yielded as ``breakers``.

    .. versionadded:: 0.1
    """
    breakers = getattr(request.state, "breakers", None)
    if not isinstance(breakers, BreakerRegistry):
        raise RuntimeError("no breakers (a BreakerRegistry) in the lifespan state")
    return breakers


def optional_session(request: Request) -> Session | None:
    """The request's session, or None when it named none.

    .. versionadded:: 0.1
    """
    session = getattr(request.state, SESSION, None)
    return session if isinstance(session, Session) else None


def require_session(request: Request) -> Session:
    """The request's session; 400 when the request named none.

    Raises:
        HTTPException: 400, with the header to send.

    .. versionadded:: 0.1
    """
    session = optional_session(request)
    if session is None:
        raise HTTPException(400, "this request needs a session: send the session id header")
    return session


#: The request's session (required).
CurrentSession = Annotated[Session, Depends(require_session)]
#: The request's session or None.
MaybeSession = Annotated[Session | None, Depends(optional_session)]
#: The store from the lifespan state.
Store = Annotated[SessionStore, Depends(get_store)]
#: The circuit breakers from the lifespan state.
Breakers = Annotated[BreakerRegistry, Depends(get_breakers)]
