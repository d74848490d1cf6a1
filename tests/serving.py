"""Serving an ASGI app in-process for tests: its lifespan runs, its state reaches requests.

httpx's ASGITransport sends no lifespan events and no lifespan state, so
`serving` runs the lifespan protocol itself (as uvicorn does), copies the
state into each request scope, and shuts the app down on exit. `Uvicorn` serves an
app over real sockets in the same event loop, on a port the kernel chose.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class Lifespan:
    """Drives an app's ASGI lifespan: `start` waits for startup, `stop` for shutdown."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.state: dict[str, Any] = {}
        self._to_app: asyncio.Queue[Message] = asyncio.Queue()
        self._from_app: asyncio.Queue[Message] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.stopped = False

    async def start(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": self.state}
        self._task = asyncio.create_task(self.app(scope, self._to_app.get, self._from_app.put))
        await self._to_app.put({"type": "lifespan.startup"})
        reply = await self._reply()
        assert reply["type"] == "lifespan.startup.complete", reply

    async def stop(self) -> Message:
        """Send shutdown; returns the app's answer once its shutdown is done."""
        self.stopped = True
        await self._to_app.put({"type": "lifespan.shutdown"})
        reply = await self._reply()
        assert self._task is not None
        await self._task
        return reply

    async def _reply(self) -> Message:
        assert self._task is not None
        getter = asyncio.ensure_future(self._from_app.get())
        done, _ = await asyncio.wait({getter, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if getter not in done:
            getter.cancel()
            self._task.result()  # re-raise the app's failure
            raise AssertionError("the app ended its lifespan without answering")
        return getter.result()


class WithState:
    """Gives every request scope a shallow copy of the lifespan state, as servers do."""

    def __init__(self, app: ASGIApp, state: dict[str, Any]) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope = {**scope, "state": dict(self.state)}
        await self.app(scope, receive, send)


@asynccontextmanager
async def serving(
    app: ASGIApp, headers: dict[str, str] | None = None
) -> AsyncIterator[tuple[httpx.AsyncClient, Lifespan]]:
    """Start `app`'s lifespan and yield a client for it (sending `headers` with every
    request); shut the app down on exit."""
    lifespan = Lifespan(app)
    await lifespan.start()
    try:
        transport = httpx.ASGITransport(app=WithState(app, lifespan.state))
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver", headers=headers
        ) as client:
            yield client, lifespan
    finally:
        # A test may have stopped the app itself, to watch the drain.
        if not lifespan.stopped:
            await lifespan.stop()


class Uvicorn:
    """An app served by uvicorn in this event loop on 127.0.0.1, on a port the kernel
    chose when this object bound its socket.

    A port drawn free and bound later can be taken in between (by another test's
    server, or a cluster node's bus port); a socket bound here, and handed to uvicorn
    as it is, cannot."""

    def __init__(self, app: ASGIApp, **options: Any) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.socket.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, **{"log_level": "warning", **options}))
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Serve, and return once uvicorn says it has started."""
        self._task = asyncio.create_task(self.server.serve(sockets=[self.socket]))
        while not self.server.started:
            if self._task.done():
                self._task.result()  # re-raise why it did not start
                raise AssertionError("uvicorn stopped before it started")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """Stop serving (uvicorn lets open requests finish) and close the socket."""
        self.server.should_exit = True
        if self._task is not None:
            await self._task
        self.socket.close()
