"""``sessionstore dev`` tried as a new user would: run it, follow the lines it prints,
stop it with Ctrl-C (SIGINT) and check that nothing it started is left running."""

from __future__ import annotations

import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow

#: The guide is complete once this line has been printed (the last of the CLI block).
_LAST_LINE = "sessionstore keys"


class DevRun:
    """The dev command as a child process whose output is read line by line."""

    def __init__(self, cwd: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONSTORE_")}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sessionstore", "dev", "--base-port", "0"],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def read_guide(self, timeout: float = 90.0) -> list[str]:
        """Lines up to the end of the printed guide (deadline), or fail with the output."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.process.poll() is not None:
                    break
                continue
            self.seen.append(line)
            if line.strip() == _LAST_LINE:
                return self.seen
        raise AssertionError("dev printed no complete guide:\n" + "\n".join(self.seen))

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise
        finally:
            self._reader.join(10)
            assert self.process.stdout is not None
            self.process.stdout.close()


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[DevRun]:
    run = DevRun(tmp_path)
    yield run
    run.stop()


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _run_printed(line: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    args = shlex.split(line)
    if args[0] == "sessionstore":  # the venv's command, wherever PATH points
        args = [sys.executable, "-m", "sessionstore", *args[1:]]
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=60)


def test_dev_fleet_starts_its_printed_steps_work_and_ctrl_c_stops_everything(
    dev: DevRun, tmp_path: Path
) -> None:
    """Redis and two replicas come up; every curl, redis-cli and sessionstore line it
    prints works; SIGINT stops it with exit 0 and no child left behind."""
    guide = dev.read_guide()
    text = "\n".join(guide)
    replicas = re.findall(r"(replica-\d+)\s+(http://\S+)\s+\(pid (\d+)", text)
    redis_pid = re.search(r"redis\s+redis://\S+\s+\(pid (\d+)", text)
    export = re.search(r"export SESSIONSTORE_REDIS_URL=(\S+)", text)
    assert len(replicas) == 2 and redis_pid is not None and export is not None
    assert "worker" in text, "the guide says where the worker stands"
    for _, url, _ in replicas:
        assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
    assert (tmp_path / ".dev" / "redis").is_dir(), "AOF data under .dev/"

    env = {**os.environ, "SESSIONSTORE_REDIS_URL": export.group(1)}
    # The commands are the guide's indented lines.
    commands = [
        line.strip()
        for line in guide
        if line.startswith("  ")
        and line.strip().startswith(("curl ", "redis-cli ", "sessionstore "))
    ]
    assert any(c.startswith("redis-cli") and "--scan" in c for c in commands)
    for command in commands:
        if command.startswith("curl") and shutil.which("curl") is None:
            continue
        if command.startswith("redis-cli") and shutil.which("redis-cli") is None:
            continue
        done = _run_printed(command.split(" | ")[0], env)
        assert done.returncode == 0, f"{command}: {done.stdout}{done.stderr}"
        assert done.stdout.strip(), f"{command} printed nothing"
        if "HGETALL" in command:
            assert "hello from the dev fleet" in done.stdout

    assert dev.stop() == 0
    pids = [int(pid) for _, _, pid in replicas] + [int(redis_pid.group(1))]
    assert all(_gone(pid) for pid in pids), "every child process is gone"
