"""The process supervisor of ``sessionstore dev`` and the fleet tests.

A `ChildProcess` is one command started as a child of this process, with its
output in a log file, waited for and stopped by pid; a `Supervisor` holds the
children started together and stops them together (SIGTERM, then SIGKILL
after a grace period). Readiness is the caller's: `wait_until` polls with a
deadline, `wait_http_ready` waits until a server child answers ``/healthz``
as itself.

Every child starts in a session of its own, so Ctrl-C in a terminal reaches
only the parent, which then stops the children in the order it chooses
(servers drain before the Redis under them stops). On Linux every child also
dies with its parent, however the parent ends (SIGKILL included): it asks the
kernel for SIGTERM when its parent goes (``prctl(PR_SET_PDEATHSIG)``, set
between fork and exec and kept across exec). The kernel ties that to the
thread that started the child, so start children from a thread that lives as
long as they should (the main thread). Elsewhere a killed parent leaves its
children running.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

import httpx
import redis

#: How long a child gets to stop after SIGTERM before it is killed.
STOP_SECONDS = 15.0


#: prctl(2) option: the signal this process gets when its parent dies (Linux).
_PR_SET_PDEATHSIG = 1


class ChildExited(RuntimeError):
    """A supervised child exited while it was expected to run."""


class PortTaken(RuntimeError):
    """A port a child should listen on is held, or answered, by another process."""


def wait_until(check: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    """Poll `check()` until it returns truthy, or raise `TimeoutError` after `timeout` s.

    Redis and socket errors count as "not yet" (the server is still starting).
    """
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (redis.RedisError, OSError) as exc:
            last = exc
        time.sleep(0.02)
    raise TimeoutError(f"{what} not ready after {timeout}s (last error: {last})")


def _die_with_parent() -> Callable[[], None] | None:
    """What a child runs between fork and exec so that it dies with this process (Linux).

    SIGTERM lets each child stop cleanly (Redis flushes its AOF, a replica drains, a
    worker hands back its jobs). A parent that died before the call has already left
    the child to init: then the child exits at once.
    """
    if sys.platform != "linux":
        return None
    # Looked up before the fork: between fork and exec nothing is loaded or allocated.
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent, signum = os.getpid(), int(signal.SIGTERM)

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return arm


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stdout: IO[bytes] | None = None,
) -> subprocess.Popen[bytes]:
    """Start `argv` as a supervised child: own session, stdin closed, ends with this
    process (Linux).

    Args:
        argv: the command.
        env: its whole environment (default: this process's).
        cwd: its working directory.
        stdout: where its output goes (stderr follows it); default inherited.
    """
    return subprocess.Popen(  # noqa: S603 (argv is built by the caller, never a shell line)
        list(argv),
        env=None if env is None else dict(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=None if stdout is None else subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_die_with_parent(),
    )


class ChildProcess:
    """One command run as a child process, its output appended to `log_path`.

    Args:
        name: how messages name it (``replica-1``).
        argv: the command.
        log_path: its log file (stdout and stderr), appended to across restarts.
        env: its whole environment (default: this process's).
        cwd: its working directory.
        url: a server child's base URL (``http://127.0.0.1:8000``), "" otherwise.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        url: str = "",
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = None if env is None else dict(env)
        self.cwd = cwd
        self.url = url
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ChildProcess:
        """Start it (again, after a stop: same command, same log)."""
        if self.alive():
            raise RuntimeError(f"{self.name} is already running")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:  # the child holds its own copy
            self.process = spawn(self.argv, env=self.env, cwd=self.cwd, stdout=log)
        return self

    @property
    def pid(self) -> int:
        """Its process id (raises before the first start)."""
        if self.process is None:
            raise RuntimeError(f"{self.name} was never started")
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        """Its exit code, None while it runs (or before it started)."""
        return None if self.process is None else self.process.poll()

    def alive(self) -> bool:
        """It was started and has not exited."""
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        """Everything it has logged so far."""
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def log_tail(self, chars: int = 3000) -> str:
        """The end of its log."""
        return self.log()[-chars:]

    def check_alive(self) -> None:
        """Raise `ChildExited` with the end of its log when it has exited."""
        if self.process is not None and not self.alive():
            raise ChildExited(
                f"{self.name} exited with {self.process.returncode}:\n{self.log_tail(2000)}"
            )

    def send_signal(self, signum: int) -> None:
        """Send `signum` to it if it runs."""
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signum)

    def wait(self, timeout: float | None = None) -> int:
        """Wait until it exits; returns its exit code (raises `TimeoutExpired`)."""
        if self.process is None:
            return 0
        return self.process.wait(timeout)

    def stop(self, timeout: float = STOP_SECONDS) -> int:
        """SIGTERM, then SIGKILL after `timeout` s; returns its exit code (0 if never run)."""
        self.send_signal(signal.SIGTERM)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            return self.kill()

    def kill(self) -> int:
        """SIGKILL, as in a crash (nothing drained, nothing returned); returns its exit code."""
        self.send_signal(signal.SIGKILL)
        return self.wait()


class Supervisor:
    """Children started together and stopped together."""

    def __init__(self) -> None:
        self.children: list[ChildProcess] = []

    def start(self, child: ChildProcess) -> ChildProcess:
        """Start `child` and keep it in `children`."""
        self.children.append(child)
        return child.start()

    def check_alive(self) -> None:
        """Raise `ChildExited` when any child has exited on its own."""
        for child in self.children:
            child.check_alive()

    def stop(self, children: Sequence[ChildProcess] | None = None) -> None:
        """SIGTERM `children` (default: all) at once, wait for each (SIGKILL after
        `STOP_SECONDS`); safe to call twice."""
        chosen = self.children if children is None else list(children)
        for child in chosen:
            child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        for child in chosen:
            try:
                child.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()


def wait_http_ready(child: ChildProcess, timeout: float) -> None:
    """Poll `child.url`'s ``/healthz`` until it answers 200 with `child`'s own pid.

    Raises:
        ChildExited: the child exited first (with the end of its log).
        PortTaken: another process answers there (an orphan of an earlier run...).
        RuntimeError: no answer in time.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            answer = httpx.get(f"{child.url}/healthz", timeout=1.0)
        except httpx.TransportError:
            answer = None
        if answer is not None and answer.status_code == 200:
            pid = _pid_in(answer)
            if pid == child.pid:
                return
            port = httpx.URL(child.url).port
            raise PortTaken(
                f"port {port} is taken: another process (pid {pid}) answers {child.url}/healthz"
                f", not {child.name} (pid {child.pid})"
            )
        child.check_alive()
        time.sleep(0.05)
    raise RuntimeError(f"{child.name} did not answer /healthz within {timeout:.0f}s")


def _pid_in(answer: httpx.Response) -> int | str:
    """The pid a ``/healthz`` answer names ("unknown" when it names none)."""
    try:
        pid = answer.json().get("pid")
    except (ValueError, AttributeError):
        pid = None
    return pid if isinstance(pid, int) else "unknown"
