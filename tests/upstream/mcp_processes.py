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

from sessionstore.testing import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
MODULE = "tests.upstream.mcp_servers"


def stdio_connection(name: str = "math", mode: str = "stdio") -> dict[str, Any]:
    """A seed-style connection dict for the stdio test server called `name`."""
    args = ["-m", MODULE, mode] + ([name] if mode == "stdio" else [])
    return {"transport": "stdio", "command": sys.executable, "args": args, "cwd": str(ROOT)}


class HttpServer:
    """One Streamable HTTP test server (uvicorn) on a fixed free port; restartable."""

    def __init__(self, name: str, *, mode: str = "http") -> None:
        self.name = name
        self.mode = mode
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

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
        """Start it and wait until the port accepts connections."""
        named = self.mode in ("http", "sse", "http-legacy")
        args = [self.mode, self.name, str(self.port)] if named else [self.mode, str(self.port)]
        self.process = subprocess.Popen(
            [sys.executable, "-m", MODULE, *args],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_until(self._accepting, f"MCP server {self.name} on port {self.port}")
        return self

    def _accepting(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"MCP server {self.name} exited with {self.process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

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
