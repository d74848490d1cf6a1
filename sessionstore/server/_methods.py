"""`AllowedMethods`: a method the path does not serve is answered 405 before anything else.

Starlette answers a wrong method itself, but only after the middleware in
front of the router ran (the session middleware would take a lease, or
refuse a bad session header with 400), and with the methods of the first
route that matched the path (``GET`` and ``DELETE`` of one path are two
routes). This plain ASGI layer, outermost, looks the path up in the app's
routes: when some route takes the path but none the method, it answers 405
with every method of that path in ``Allow``.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from ..asgi import Problem

#: The methods an ``Allow`` may list.
_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


class AllowedMethods:
    """Answer 405 (problem body, full ``Allow``) for a method no route of the path takes.

    Args:
        app: the ASGI app to wrap (the middleware stack).
        routes_of: the FastAPI app whose routes are looked up.
    """

    def __init__(self, app: ASGIApp, *, routes_of: FastAPI) -> None:
        self.app = app
        self.routes_of = routes_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            allow = self.allowed(scope)
            if allow is not None:
                problem = Problem(
                    405,
                    "method_not_allowed",
                    f"{scope['method']} is not served here; use {', '.join(allow)}",
                    headers={"Allow": ", ".join(allow)},
                )
                await problem.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def allowed(self, scope: Scope) -> list[str] | None:
        """The methods of the path when the request's method is not one of them, else None.

        Asks each route whether it takes the path with each method (the routes'
        own `matches`), so included routers and mounts count as they route.
        """
        if self._match(scope, scope["method"]) is not Match.PARTIAL:
            return None
        return [m for m in _METHODS if self._match(scope, m) is Match.FULL]

    def _match(self, scope: Scope, method: str) -> Match:
        best = Match.NONE
        probe = {**scope, "method": method}
        for route in self.routes_of.router.routes:
            match, _ = route.matches(probe)
            if match is Match.FULL:
                return match
            if match is Match.PARTIAL:
                best = match
        return best
