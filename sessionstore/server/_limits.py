"""Request body size limit, as plain ASGI middleware.

A declared ``Content-Length`` over the limit is refused with 413 before any
byte is read; a chunked body is counted as it arrives and refused the moment
it passes the limit, so an oversized body is never held in memory whole.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..asgi import Problem


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a streamed body passes the limit (answered as 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is over the limit of {limit} bytes")


class BodySizeLimit:
    """Refuse request bodies over `max_bytes` with 413.

    .. versionadded:: 0.1
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = self._declared_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, counting_receive, send)

    @staticmethod
    def _declared_length(scope: Scope) -> int | None:
        for key, value in scope.get("headers", ()):
            if key == b"content-length":
                text = value.decode("latin-1").strip()
                return int(text) if text.isdigit() else None
        return None

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        problem = Problem(
            413,
            "payload_too_large",
            f"request body is over the limit of {self.max_bytes} bytes",
            extra={"limit": self.max_bytes},
            headers={"Connection": "close"},
        )
        await problem.response()(scope, receive, send)
