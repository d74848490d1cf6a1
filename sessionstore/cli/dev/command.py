"""``sessionstore dev``: a whole fleet on this machine, for trying things out.

With no SESSIONSTORE_REDIS_URL it starts a private Redis (AOF on, data in
``.dev/redis``), then two or more server replicas on their own ports and a
worker (``sessionstore worker``, sweeping every few seconds), all as child
processes (`DevFleet`). It creates a demo session, and a short-lived one for
the worker to expire, trips a demo circuit breaker through one replica (the
others refuse its calls too), then prints where everything is and the exact
curl, redis-cli and sessionstore lines to look at it. Ctrl-C (or SIGTERM) stops
everything: servers and workers first, Redis last.
"""

from __future__ import annotations

import importlib.util
import secrets
import shutil
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Annotated

import httpx
import typer

from ... import KeySpace
from ...testing import PortTaken, free_port, port_taken
from .._support import EXIT_FAILED, fail, load_settings
from .breakers import breaker_lines, trip_demo_breaker
from .fleet import DevFleet, RedisLines

#: Idle timeout of the short-lived demo session: the worker expires it soon after.
SHORT_IDLE_SECONDS = 10
#: The user of the demo sessions (the printed lines list and read its index entry).
DEMO_USER = "demo"


def dev(
    replicas: int = typer.Option(2, min=1, max=16, help="Server replicas to start."),
    base_port: int = typer.Option(
        8000, min=0, max=65000, help="First replica's port; 0: free ports."
    ),
    redis_port: int = typer.Option(0, min=0, max=65535, help="Embedded Redis port; 0: a free one."),
    workers: int = typer.Option(1, min=0, max=8, help="Workers to start."),
    mcp_replicas: int = typer.Option(
        2, min=0, max=8, help="Replicas of the example MCP server (needs the mcp extra)."
    ),
    data_dir: Annotated[Path, typer.Option(help="Redis data (AOF) and child logs.")] = Path(".dev"),
) -> None:
    """Run Redis, server replicas and a worker locally; Ctrl-C stops them all."""
    settings = load_settings()
    token = (
        settings.server.health_token.get_secret_value()
        if settings.server.health_token
        else secrets.token_urlsafe(18)
    )
    admin_token = (
        settings.server.admin_token.get_secret_value()
        if settings.server.admin_token
        else secrets.token_urlsafe(18)
    )
    service_token = (
        settings.server.service_tokens.get_secret_value().split(",")[0].strip()
        if settings.server.service_tokens
        else secrets.token_urlsafe(18)
    )
    fleet = DevFleet(settings, data_dir.resolve(), token, admin_token, service_token)
    stopping: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        mcp_note = _start(fleet, replicas, workers, mcp_replicas, base_port, redis_port)
        demo_id, short_id = _demo(fleet)
        failed = trip_demo_breaker(fleet)
        _print_guide(fleet, demo_id, short_id, failed, mcp_note)
        fleet.watch(stopping)
    except (RuntimeError, httpx.HTTPError) as exc:
        fleet.stop()
        fail(str(exc), EXIT_FAILED)
    except BaseException:
        fleet.stop()  # no child outlives the command, whatever went wrong
        raise
    typer.echo("stopping: servers drain their requests, workers stop, then Redis ...")
    fleet.stop()
    typer.echo("stopped")


def _check_ports(base_port: int, servers: int, redis_port: int) -> None:
    """Refuse fixed ports another process holds (an earlier fleet still running...)
    before anything starts: `servers` ports from `base_port` on, and Redis's."""
    wanted = [(base_port + n, "--base-port") for n in range(servers)] if base_port else []
    if redis_port:
        wanted.append((redis_port, "--redis-port"))
    for port, option in wanted:
        if port_taken(port):
            raise PortTaken(
                f"port {port} is taken by another process (a `sessionstore dev` still "
                f"running?): stop it, or choose other ports with {option} (0: free ones)"
            )


def _start(
    fleet: DevFleet, replicas: int, workers: int, mcp: int, base_port: int, redis_port: int
) -> str:
    """Start everything; returns why no MCP replica runs ("" when they do)."""
    note = _mcp_unavailable() if mcp else "--mcp-replicas 0"
    _check_ports(base_port, replicas + (0 if note else mcp), redis_port)
    fleet.start_redis(redis_port)
    for index in range(replicas):
        port = base_port + index if base_port else free_port()
        url = f"http://127.0.0.1:{port}"
        args = ["serve", "--host", "127.0.0.1", "--port", str(port)]
        fleet.start_child(f"replica-{index + 1}", args, url)
    for index in range(workers):
        fleet.start_child(f"worker-{index + 1}", ["worker"])
    if not note:
        for index in range(mcp):
            port = base_port + replicas + index if base_port else free_port()
            fleet.start_mcp_replica(f"mcp-{index + 1}", port, MCP_EXAMPLE)
    fleet.wait_ready()
    return note


#: The example MCP server of a source checkout (not part of an installed wheel).
MCP_EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "mcp_notes.py"


def _mcp_unavailable() -> str:
    """Why the example MCP server cannot run here, or "" if it can."""
    if importlib.util.find_spec("mcp") is None:
        return "the mcp extra is not installed (pip install 'sessionstore[mcp]')"
    if not MCP_EXAMPLE.exists():
        return f"{MCP_EXAMPLE} is not here (run from a source checkout)"
    return ""


def _mcp_lines(fleet: DevFleet, note: str) -> list[str]:
    if note:
        return [f"No MCP server runs: {note}.", ""]
    first = fleet.mcp_replicas[0].url
    return [
        "MCP: the example server (examples/mcp_notes.py) runs on "
        f"{len(fleet.mcp_replicas)} replicas; its sessions roam between them",
        "(docs/mcp.md). Point any MCP client (Streamable HTTP) at any of these:",
        *(f"  {c.name}  {c.url}/mcp  (pid {c.pid}, log {c.log_path})" for c in fleet.mcp_replicas),
        "Call its tools with the SDK's client, each request on the next replica in turn:",
        f"  {sys.executable} {MCP_EXAMPLE} {' '.join(f'{c.url}/mcp' for c in fleet.mcp_replicas)}",
        f"  curl -s {first}/metrics | grep '^sessionstore_mcp_'",
        "",
    ]


def _demo(fleet: DevFleet) -> tuple[str, str]:
    """Create a demo session on the first replica and read it back on the last; create a
    short-lived one on the last replica for the worker to expire."""
    first, last = fleet.replicas[0].url, fleet.replicas[-1].url
    service = {"Authorization": f"Bearer {fleet.service_token}"}
    made = httpx.post(
        f"{first}/sessions",
        json={"user_id": DEMO_USER, "state": {"greeting": "hello from the dev fleet"}},
        headers=service,
        timeout=5.0,
    )
    made.raise_for_status()
    session_id = str(made.json()["id"])
    httpx.get(f"{last}/sessions/{session_id}", headers=service, timeout=5.0).raise_for_status()
    short = httpx.post(
        f"{last}/sessions",
        json={"user_id": DEMO_USER, "idle_timeout_seconds": SHORT_IDLE_SECONDS},
        headers=service,
        timeout=5.0,
    )
    short.raise_for_status()
    return session_id, str(short.json()["id"])


def _path_line() -> list[str]:
    """Put this `sessionstore` on PATH when the shell would not find it (make dev's .venv)."""
    # The console script sits beside the interpreter that runs it (a venv's bin/).
    here = Path(sys.executable).parent
    found = shutil.which("sessionstore")
    if not (here / "sessionstore").exists() or (found and Path(found).parent == here):
        return []
    return [f'  export PATH="{here}:$PATH"']


def _worker_lines(fleet: DevFleet, short_id: str, cli: RedisLines) -> list[str]:
    if not fleet.workers:
        return ["No worker runs (--workers 0): nothing expires sessions.", ""]
    keys = KeySpace(fleet.settings.session.key_prefix, fleet.settings.session.shards)
    every = f"every {fleet.sweep_interval().total_seconds():g} s"
    return [
        f"Watch the worker: a short-lived session {short_id} ({SHORT_IDLE_SECONDS} s idle",
        f"timeout) was created too; the worker sweeps {every} and expires it soon after it",
        "falls due (`events tail` shows it, and keeps following new events until Ctrl-C):",
        "  sessionstore workers",
        "  sessionstore events tail --from 0",
        f"  sessionstore sessions show {short_id}",
        *cli(
            f"ZRANGE '{keys.worker_index()}' 0 -1 WITHSCORES",
            *(f"HGETALL '{keys.worker(w.worker_id)}'" for w in fleet.workers),
            f"XREVRANGE '{keys.session(short_id).events}' + - COUNT 5",
        ),
        "",
    ]


def _print_guide(fleet: DevFleet, demo_id: str, short_id: str, failed: int, mcp: str) -> None:
    settings = fleet.settings
    space = KeySpace(settings.session.key_prefix, settings.session.shards)
    keys = space.session(demo_id)
    cli = fleet.redis_lines()
    if fleet.redis is not None:
        where = (
            f"{fleet.redis_url}  (pid {fleet.redis.process.pid if fleet.redis.process else '?'}, "
        )
        where += f"AOF in {fleet.redis.directory})"
    else:
        where = "SESSIONSTORE_REDIS_URL (given)"
    first, last = fleet.replicas[0].url, fleet.replicas[-1].url
    lines = [
        "sessionstore dev fleet is up; Ctrl-C stops everything.",
        "",
        f"  redis      {where}",
        *(f"  {c.name}  {c.url}  (pid {c.pid}, log {c.log_path})" for c in fleet.replicas),
        *(f"  {c.name}   id {c.worker_id}  (pid {c.pid}, log {c.log_path})" for c in fleet.workers),
        f"  health token  {fleet.token}",
        f"  admin token   {fleet.admin_token}  (breaker control)",
        f"  service token {fleet.service_token}  (creating and reading sessions; docs/security.md)",
        "",
        f"A demo session {demo_id} was created on {first} and read back on {last}.",
        "",
        "Try the API (any replica serves any session; a backend sends the service token,",
        f"a session's own client its id in the Mcp-Session-Id header; in a browser: {first}/docs):",
        f"  curl -s -X POST {first}/sessions -H 'Authorization: Bearer {fleet.service_token}' "
        """-H 'content-type: application/json' -d '{"user_id": "alice", "state": {"n": 1}}'""",
        f"  curl -s -H 'Authorization: Bearer {fleet.service_token}' {last}/sessions/{demo_id}",
        f"  curl -s -H 'Mcp-Session-Id: {demo_id}' {last}/sessions/{demo_id}",
        f"  curl -s -H 'Mcp-Session-Id: {demo_id}' {last}/session",
        f"  curl -s -H 'Authorization: Bearer {fleet.token}' {first}/session-health",
        f"  curl -s {first}/metrics | grep '^sessionstore_'",
        f"  curl -s {first}/openapi.json | python3 -m json.tool | head -n 20",
        "",
        "Look inside Redis:",
        *cli(
            f"--scan --pattern '{settings.session.key_prefix}:*'",
            f"HGETALL '{keys.record}'",
            f"ZRANGE '{keys.expiry}' 0 -1 WITHSCORES",
            f"HGETALL '{space.expiry_counts(keys.shard)}'",
            f"XREVRANGE '{keys.events}' + - COUNT 5",
            f"HGET '{space.user_index(DEMO_USER)}' {DEMO_USER}",
        ),
        "",
        "Use the CLI against it:",
        *_path_line(),
        f"  export SESSIONSTORE_REDIS_URL={fleet.redis_url}",
        f"  sessionstore sessions list --user {DEMO_USER}",
        f"  sessionstore sessions show {demo_id}",
        "  sessionstore health",
        "",
        *_worker_lines(fleet, short_id, cli),
        *breaker_lines(fleet, failed, cli),
        *_mcp_lines(fleet, mcp),
        "Every key, its type, TTL and a redis-cli line to read it:",
        "  sessionstore keys",
        "",
    ]
    typer.echo("\n".join(lines))
