"""uvicorn's h11 protocol with a deadline for a request's headers.

uvicorn (0.3x) times out only an idle keep-alive connection: once a client
has sent the first byte of a request, it may trickle the rest of its headers
forever, holding a connection slot (``limit_concurrency``) and a socket. The
app never sees such a request, so no middleware can refuse it; this subclass
arms a timer when a connection opens and after each response, disarms it
once a request's headers are in, and when it fires answers 408 (if part of a
request arrived) and closes the connection. The body's deadline is the app's
(`sessionstore.asgi.BodyLimits`).
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

_LATE = b"the request headers took too long\n"
_TIMED_OUT = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: %d\r\n"
    b"connection: close\r\n\r\n%s" % (len(_LATE), _LATE)
)


class HeaderDeadlineProtocol(H11Protocol):
    """`H11Protocol` that closes a connection whose request headers are late.

    .. versionadded:: 0.1
    """

    #: Seconds a request's headers may take, from the connection's opening or the
    #: previous response's end (set by `header_deadline_protocol`).
    header_timeout: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._partial_request = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Open the connection and arm the deadline for its first request's headers."""
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        """Disarm, then close as uvicorn does."""
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Feed h11; once a request's headers are parsed, its deadline is off."""
        if self.conn.their_state is h11.IDLE:
            self._partial_request = True
        super().data_received(data)
        self._disarm_once_headers_are_in()

    def on_response_complete(self) -> None:
        """After each response, the next request's headers get a deadline of their own."""
        super().on_response_complete()
        self._disarm_once_headers_are_in()
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self._partial_request = False
            self._arm()

    def _disarm_once_headers_are_in(self) -> None:
        if self.conn.their_state is not h11.IDLE:
            self._disarm()

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self._partial_request:
            # h11 cannot answer a request it has not parsed: the bytes are written raw.
            self.logger.info("closing a connection whose request headers were late")
            self.transport.write(_TIMED_OUT)
        self.transport.close()


def header_deadline_protocol(seconds: float) -> type[HeaderDeadlineProtocol]:
    """A `HeaderDeadlineProtocol` class for ``uvicorn.run(http=...)`` with this deadline.

    .. versionadded:: 0.1
    """
    if not seconds > 0:
        raise ValueError("the header deadline must be positive")
    return type("HeaderDeadlineProtocol", (HeaderDeadlineProtocol,), {"header_timeout": seconds})
