"""``sessionstore dev``: a whole fleet on this machine, for trying things out.

With no SESSIONSTORE_REDIS_URL it starts a private Redis (AOF on, data in
``.dev/redis``), then two or more server replicas on their own ports, all as
child processes in their own sessions, so Ctrl-C reaches only this command,
which then stops them in order: servers first (they drain their requests),
then Redis. It prints where everything is, and the exact curl and redis-cli
lines to look at it.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Annotated

import httpx
import typer

from .._embedded import LocalRedis, free_port, wait_until
from .._keys import KeySpace
from .._settings import Settings
from ._support import EXIT_FAILED, fail, load_settings

#: How long a child gets to come up, and to stop before it is killed.
_START_SECONDS = 30.0
_STOP_SECONDS = 15.0


@dataclass
class _Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]
    url: str = ""

    def alive(self) -> bool:
        return self.process.poll() is None


@dataclass
class _Fleet:
    settings: Settings
    data_dir: Path
    redis: LocalRedis | None = None
    redis_url: str = ""
    children: list[_Child] = field(default_factory=list)
    token: str = ""

    def start_redis(self, port: int) -> None:
        if self.settings.redis_url:
            self.redis_url = self.settings.redis_url
            return
        server = LocalRedis(
            port=port or None, directory=str(self.data_dir / "redis"), appendonly=True
        )
        server.directory.mkdir(parents=True, exist_ok=True)
        # Own session: Ctrl-C in the terminal must not stop Redis under the servers.
        server.process = subprocess.Popen(  # noqa: S603
            server.command(), stdin=subprocess.DEVNULL, start_new_session=True
        )
        self.redis = server
        self.redis_url = server.url
        import redis as sync_redis

        client = sync_redis.Redis(port=server.port, socket_connect_timeout=0.5)
        try:
            wait_until(lambda: server._alive() and client.ping(), f"redis on port {server.port}")
        finally:
            client.close()

    def start_child(self, name: str, args: list[str], url: str = "") -> _Child:
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"{name}.log"
        log = log_path.open("ab")
        env = dict(
            os.environ,
            SESSIONSTORE_REDIS_URL=self.redis_url,
            SESSIONSTORE_HEALTH_TOKEN=self.token,
        )
        process = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "sessionstore", *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        child = _Child(name, process, log_path, log, url)
        self.children.append(child)
        return child

    def wait_ready(self, child: _Child) -> None:
        deadline = time.monotonic() + _START_SECONDS
        while time.monotonic() < deadline:
            if not child.alive():
                tail = child.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{child.name} exited with {child.process.returncode}:\n{tail}")
            try:
                if httpx.get(f"{child.url}/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{child.name} did not answer /healthz within {_START_SECONDS:.0f}s")

    def stop(self) -> None:
        """Stop the children (SIGTERM, then SIGKILL), then Redis; safe to call twice."""
        for child in self.children:
            if child.alive():
                child.process.terminate()
        for child in self.children:
            try:
                child.process.wait(_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
            child.log.close()
        if self.redis is not None:
            self.redis.stop(remove=False)


def dev(
    replicas: int = typer.Option(2, min=1, max=16, help="Server replicas to start."),
    base_port: int = typer.Option(
        8000, min=0, max=65000, help="First replica's port; 0: free ports."
    ),
    redis_port: int = typer.Option(0, min=0, max=65535, help="Embedded Redis port; 0: a free one."),
    data_dir: Annotated[Path, typer.Option(help="Redis data (AOF) and child logs.")] = Path(".dev"),
) -> None:
    """Run Redis, server replicas (and, soon, a worker) locally; Ctrl-C stops them all."""
    settings = load_settings()
    fleet = _Fleet(settings, data_dir.resolve())
    fleet.token = (
        settings.health_token.get_secret_value()
        if settings.health_token
        else secrets.token_urlsafe(18)
    )
    stopping: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        _start(fleet, replicas, base_port, redis_port)
        demo_id = _demo(fleet)
        _print_guide(fleet, demo_id)
        _watch(fleet, stopping)
    except RuntimeError as exc:
        fleet.stop()
        fail(str(exc), EXIT_FAILED)
    typer.echo("stopping: servers drain their requests, then Redis stops ...")
    fleet.stop()
    typer.echo("stopped")


def _start(fleet: _Fleet, replicas: int, base_port: int, redis_port: int) -> None:
    fleet.start_redis(redis_port)
    for index in range(replicas):
        port = base_port + index if base_port else free_port()
        url = f"http://127.0.0.1:{port}"
        args = ["serve", "--host", "127.0.0.1", "--port", str(port)]
        fleet.start_child(f"replica-{index + 1}", args, url)
    # TODO(workers branch): start `sessionstore worker` here as a child process once
    # the worker fleet lands in main; until then nothing sweeps expired sessions.
    for child in fleet.children:
        fleet.wait_ready(child)


def _demo(fleet: _Fleet) -> str:
    """Create a demo session on the first replica and read it back on the last."""
    first, last = fleet.children[0].url, fleet.children[-1].url
    made = httpx.post(
        f"{first}/sessions",
        json={"user_id": "demo", "state": {"greeting": "hello from the dev fleet"}},
        timeout=5.0,
    )
    made.raise_for_status()
    session_id = str(made.json()["id"])
    httpx.get(f"{last}/sessions/{session_id}", timeout=5.0).raise_for_status()
    return session_id


def _print_guide(fleet: _Fleet, demo_id: str) -> None:
    settings = fleet.settings
    keys = KeySpace(settings.key_prefix, settings.shards).session(demo_id)
    if fleet.redis is not None:
        cli = f"redis-cli -p {fleet.redis.port}"
        where = (
            f"{fleet.redis_url}  (pid {fleet.redis.process.pid if fleet.redis.process else '?'}, "
        )
        where += f"AOF in {fleet.redis.directory})"
    else:
        cli, where = 'redis-cli -u "$SESSIONSTORE_REDIS_URL"', "SESSIONSTORE_REDIS_URL (given)"
    first, last = fleet.children[0].url, fleet.children[-1].url
    lines = [
        "sessionstore dev fleet is up; Ctrl-C stops everything.",
        "",
        f"  redis      {where}",
        *(f"  {c.name}  {c.url}  (pid {c.process.pid}, log {c.log_path})" for c in fleet.children),
        "  worker     not started: TODO, arrives with the workers branch (no expiry sweeps yet)",
        f"  health token  {fleet.token}",
        "",
        f"A demo session {demo_id} was created on {first} and read back on {last}.",
        "",
        "Try the API (any replica serves any session):",
        f"  curl -s -X POST {first}/sessions -H 'content-type: application/json' "
        """-d '{"user_id": "alice", "state": {"n": 1}}'""",
        f"  curl -s {last}/sessions/{demo_id}",
        f"  curl -s -H 'Mcp-Session-Id: {demo_id}' {last}/session",
        f"  curl -s -H 'Authorization: Bearer {fleet.token}' {first}/session-health",
        f"  curl -s {first}/metrics | grep '^sessionstore_'",
        f"  open {first}/docs",
        "",
        "Look inside Redis:",
        f"  {cli} --scan --pattern '{settings.key_prefix}:*'",
        f"  {cli} HGETALL '{keys.record}'",
        f"  {cli} ZRANGE '{keys.expiry}' 0 -1 WITHSCORES",
        f"  {cli} XREVRANGE '{keys.events}' + - COUNT 5",
        "",
        "Use the CLI against it:",
        f"  export SESSIONSTORE_REDIS_URL={fleet.redis_url}",
        "  sessionstore sessions list --user demo",
        f"  sessionstore sessions show {demo_id}",
        "  sessionstore health",
        "  sessionstore keys",
        "",
    ]
    typer.echo("\n".join(lines))


def _watch(fleet: _Fleet, stopping: list[int]) -> None:
    """Return on SIGINT/SIGTERM; raise if a child dies on its own."""
    while not stopping:
        for child in fleet.children:
            if not child.alive():
                raise RuntimeError(
                    f"{child.name} exited with {child.process.returncode}; see {child.log_path}"
                )
        redis = fleet.redis.process if fleet.redis is not None else None
        if redis is not None and redis.poll() is not None:
            raise RuntimeError(f"redis exited with {redis.returncode}; see its server.log")
        time.sleep(0.2)
