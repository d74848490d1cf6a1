"""Start the test MCP servers (`mcp_servers`) as child processes, stop them by pid."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from sessionstore.testing import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
MODULE = "tests.upstream.mcp_servers"


def stdio_connection(name: str = "math", mode: str = "stdio") -> dict[str, Any]:
    """A seed-style connection dict for the stdio test server called `name`."""
    args = ["-m", MODULE, mode] + ([name] if mode == "stdio" else [])
    return {"transport": "stdio", "command": sys.executable, "args": args, "cwd": str(ROOT)}


class HttpServer:
    """One Streamable HTTP test server (uvicorn) on a fixed free port; restartable.

    This process binds the port and hands the listening socket to the child, then
    closes its own copy: no other process can take the port between the choice and
    the child's start (a child that only got the port number could lose it to another
    test run and leave this one talking to that run's server), and the port refuses
    connections as soon as the child is gone.
    """

    def __init__(self, name: str, *, mode: str = "http") -> None:
        self.name = name
        self.mode = mode
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._started = False

    @property
    def url(self) -> str:
        """The MCP endpoint."""
        path = "/sse" if self.mode == "sse" else "/mcp"
        return f"http://127.0.0.1:{self.port}{path}"

    def connection(self) -> dict[str, Any]:
        """A seed-style connection dict for it."""
        transport = "sse" if self.mode == "sse" else "streamable_http"
        return {"transport": transport, "url": self.url}

    def start(self) -> HttpServer:
        """Start it on its port (the same one on a restart) and wait until it answers."""
        listener = self._listen()
        named = self.mode in ("http", "sse", "http-legacy")
        fd = str(listener.fileno())
        args = [self.mode, self.name, fd] if named else [self.mode, fd]
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", MODULE, *args],
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                pass_fds=(listener.fileno(),),
            )
        finally:
            listener.close()  # the child's copy is the only one left
        self._started = True
        ready = self._answering if named else self._running
        wait_until(ready, f"MCP server {self.name} on port {self.port}")
        return self

    def _listen(self) -> socket.socket:
        """A listening socket on the port; on the first start, another free port if
        the drawn one was taken meanwhile (a restart keeps its address or fails)."""
        for _ in range(20):
            try:
                return socket.create_server(("127.0.0.1", self.port))
            except OSError:
                if self._started:
                    raise RuntimeError(
                        f"port {self.port} of MCP server {self.name} was taken while it was down"
                    ) from None
                self.port = free_port()
        raise RuntimeError(f"no port could be bound for MCP server {self.name}")

    def _running(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"MCP server {self.name} exited with {self.process.returncode}")
        return True

    def _answering(self) -> bool:
        # Only the child holds the socket: any HTTP answer there is its own. (A TCP
        # connect alone proves nothing: the kernel accepts before the child serves.)
        self._running()
        try:
            httpx.get(f"http://127.0.0.1:{self.port}/ready", timeout=1.0)
        except httpx.TransportError:
            return False
        return True

    def kill(self) -> None:
        """SIGKILL it (a crash) and wait until it is gone."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self.process = None


def children(marker: str = MODULE) -> list[tuple[int, str]]:
    """(pid, state) of this process's child processes whose command line holds `marker`.

    State ``Z`` is a zombie (exited, never reaped).
    """
    found = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        state, ppid = fields[0], int(fields[1])
        if ppid == me and (marker in cmdline or state == "Z"):
            found.append((int(entry.name), state))
    return found
