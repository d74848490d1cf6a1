"""The process supervisor of ``sessionstore dev`` and the fleet tests, with real processes:
children end with their parent however it ends, and a port is never mistaken for a
child's when another process answers it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from sessionstore.testing import (
    ChildProcess,
    LocalRedis,
    PortTaken,
    free_port,
    port_taken,
    wait_http_ready,
    wait_until,
)
from tests.foreign_healthz import foreign_healthz

#: A parent that starts a sleeping child and a private Redis, prints both pids, then waits.
_PARENT = """
import sys, time
from pathlib import Path
from sessionstore.testing import ChildProcess, LocalRedis

logs = Path(sys.argv[1])
child = ChildProcess(
    "sleeper", [sys.executable, "-c", "import time; time.sleep(600)"], log_path=logs / "s.log"
).start()
server = LocalRedis(directory=str(logs / "redis")).start()
print(child.pid, server.process.pid, flush=True)
time.sleep(600)
"""


def _running(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_children_end_when_their_parent_is_sigkilled(tmp_path: Path) -> None:
    """SIGKILL of the supervising process (no handler, no cleanup runs): its child and
    its private Redis end too, within a deadline."""
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    pids: list[int] = []
    try:
        pids = [int(pid) for pid in parent.stdout.readline().split()]
        assert len(pids) == 2 and all(_running(pid) for pid in pids)
        parent.kill()
        parent.wait()
        wait_until(lambda: not any(_running(pid) for pid in pids), "children gone", timeout=30)
    finally:
        parent.kill()
        parent.wait()
        parent.stdout.close()
        for pid in pids:  # only if the test failed: leave nothing behind
            if _running(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def other_server() -> Iterator[int]:
    """A port answered by another process's /healthz (this test process's pid)."""
    with foreign_healthz(free_port(), pid=os.getpid()) as port:
        yield port


def test_a_healthz_answered_by_another_process_is_not_the_child_s(
    tmp_path: Path, other_server: int
) -> None:
    """The child never binds its port and another process answers /healthz there: waiting
    for the child says the port is taken (naming the other pid) instead of calling it
    ready."""
    child = ChildProcess(
        "replica-1",
        [sys.executable, "-c", "import time; time.sleep(600)"],
        log_path=tmp_path / "replica-1.log",
        url=f"http://127.0.0.1:{other_server}",
    ).start()
    try:
        with pytest.raises(PortTaken, match=f"port {other_server} is taken.*pid {os.getpid()}"):
            wait_http_ready(child, timeout=30)
    finally:
        child.kill()


def test_port_taken_sees_a_listener_and_not_a_closed_port() -> None:
    """A listening socket makes its port taken; once it is closed the port is free again
    (even with connections of it left in TIME_WAIT, as servers bind with SO_REUSEADDR)."""
    listener = socket.create_server(("127.0.0.1", free_port()))
    port = listener.getsockname()[1]
    try:
        with socket.create_connection(("127.0.0.1", port)):
            accepted, _ = listener.accept()
            accepted.close()  # the server side closes first: TIME_WAIT on its port
        assert port_taken(port)
    finally:
        listener.close()
    assert not port_taken(port)


def test_free_ports_lie_outside_the_ephemeral_range() -> None:
    """Neither a drawn port nor its cluster bus port (+10000) is one the kernel may give
    an outgoing connection as its local port (which would then hold it)."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except OSError:
        pytest.skip("no /proc/sys/net/ipv4/ip_local_port_range here")
    drawn = {free_port() for _ in range(200)}
    inside = [p for p in drawn if low <= p <= high or low <= p + 10000 <= high]
    assert inside == [], f"ports in the ephemeral range {low}-{high}: {inside}"


def test_a_local_redis_is_ready_only_when_it_answers_as_itself() -> None:
    """A second server on a port another Redis holds does not count as started because
    the other one answers PING: its start fails (it could not bind)."""
    first = LocalRedis().start()
    second = LocalRedis(port=first.port)
    try:
        with pytest.raises(RuntimeError, match="redis server exited"):
            second.start()
    finally:
        second.stop()
        first.stop()


def test_a_local_redis_whose_drawn_port_is_taken_starts_on_another() -> None:
    """A server that drew its own port and finds it taken at start (another process, or
    another cluster node's bus port drawn beside it, bound it first) starts on a newly
    drawn port; one given its port still fails."""
    server = LocalRedis()
    taken = server.port
    with socket.socket() as holder:
        # Bound, not listening: the server's bind fails, and a probe is refused.
        holder.bind(("127.0.0.1", taken))
        try:
            server.start()
            assert server.port != taken
            assert server.process is not None
            info = redis.Redis(port=server.port).info("server")
            assert info["process_id"] == server.process.pid
        finally:
            server.stop()
        given = LocalRedis(port=taken)
        try:
            with pytest.raises(PortTaken, match="Address already in use"):
                given.start()
        finally:
            given.stop()
