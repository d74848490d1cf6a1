"""An MCP fleet for tests: a private Redis, uvicorn replicas of examples/mcp_notes.py,
optional `sessionstore worker` processes, and HAProxy in front (deploy/haproxy.cfg)."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from sessionstore import Settings
from sessionstore.testing import ChildProcess, LocalRedis, Supervisor, free_port, wait_http_ready
from tests.fleet.served import ROOT, Worker, _fields, log_tails, metric_sample, run_haproxy

EXAMPLES = ROOT / "examples"
_READY_SECONDS = 60.0


class McpReplica(ChildProcess):
    """One ``uvicorn mcp_notes:app`` child process (the example MCP server)."""

    def __init__(self, name: str, env: dict[str, str], directory: Path) -> None:
        self.port = free_port()
        command = [sys.executable, "-m", "uvicorn", "--app-dir", str(EXAMPLES), "mcp_notes:app"]
        super().__init__(
            name,
            [*command, "--port", str(self.port), "--log-level", "warning"],
            log_path=directory / f"{name}.log",
            env={**env, "MCP_REPLICA_NAME": name},
            url=f"http://127.0.0.1:{self.port}",
        )

    def wait_ready(self) -> None:
        """Poll /healthz until it answers (deadline), failing early if the process died."""
        wait_http_ready(self, _READY_SECONDS)

    def metric(self, name: str, **labels: str) -> float:
        """One sample of this replica's /metrics (0 when absent)."""
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        try:
            return metric_sample(text, name, **labels)
        except AssertionError:
            return 0.0


class McpFleet:
    """A Redis, MCP replicas and workers; `balanced` adds HAProxy in front."""

    def __init__(self, replicas: int, settings: dict[str, str], workers: int = 0) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="sessionstore-mcp-fleet-"))
        self.redis = LocalRedis(directory=str(self.directory / "redis"))
        self.env = {**os.environ, "SESSIONSTORE_REDIS_URL": self.redis.url, **settings}
        self.replicas = [
            McpReplica(f"replica-{n + 1}", self.env, self.directory) for n in range(replicas)
        ]
        self.workers = [Worker(f"worker-{n + 1}", self.env, self.directory) for n in range(workers)]
        self.supervisor = Supervisor()
        self.settings = Settings(**_fields(self.env))

    def start(self) -> McpFleet:
        try:
            self.redis.start()
            for child in [*self.replicas, *self.workers]:
                self.supervisor.start(child)
            for replica in self.replicas:
                replica.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def restart(self, replica: McpReplica) -> None:
        """Start a stopped replica again on the same port."""
        replica.start()
        replica.wait_ready()

    def replica_named(self, name: str) -> McpReplica:
        return next(r for r in self.replicas if r.name == name)

    @contextmanager
    def balanced(self) -> Iterator[str]:
        """HAProxy round robin (no stickiness) in front of the replicas; yields its URL."""
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        fleet: Any = self  # run_haproxy reads .directory and .replicas[n].port only
        with run_haproxy(binary, fleet) as url:
            yield url

    def logs(self) -> str:
        """The tails of the fleet's process logs (replicas, workers, HAProxy)."""
        return log_tails(self.directory)

    def stop(self) -> None:
        self.supervisor.stop()
        self.redis.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
