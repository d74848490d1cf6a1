"""A hung Redis against a real ``sessionstore serve``: how long 150 concurrent requests
wait for their 503.

Starts a private Redis and one replica (``python -m sessionstore serve``), opens 150
keep-alive connections, then sends the same burst of 150 concurrent requests (a third
each: a leased read of the current session, a create, a read by id) twice: with Redis
answering (the peer figure, what the machine costs per burst) and with Redis stopped
by SIGSTOP (connections stay open, nothing answers). The peer, in the same run, is a
replica whose request budget is longer than the socket timeout
(``SESSIONSTORE_REQUEST_REDIS_TIMEOUT=60``): its requests wait for the 2 s socket
timeout and queue on the pool, as all did before the budget and the outage latch.
Prints p50, p99 and max per burst and the statuses. Run:
``python benchmarks/hung_redis.py``.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import httpx

from sessionstore.testing import LocalRedis, free_port

CONCURRENT = 150
#: The replicas' service token: creating sessions and reading them by id need one.
SERVICE_TOKEN = secrets.token_urlsafe(16)


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _burst(
    requests: list[Callable[[], Awaitable[httpx.Response]]],
) -> tuple[list[float], Counter[int]]:
    async def timed(request: Callable[[], Awaitable[httpx.Response]]) -> tuple[float, int]:
        started = time.perf_counter()
        answer = await request()
        return time.perf_counter() - started, answer.status_code

    results = await asyncio.gather(*(timed(request) for request in requests))
    return [took for took, _ in results], Counter(status for _, status in results)


def _report(label: str, took: list[float], statuses: Counter[int]) -> None:
    print(
        f"{label:<38} p50 {statistics.median(took) * 1000:7.0f} ms   "
        f"p99 {_quantile(took, 0.99) * 1000:7.0f} ms   max {max(took) * 1000:7.0f} ms   "
        f"statuses {dict(sorted(statuses.items()))}"
    )


async def run(base: str, redis_pid: int, label: str) -> None:
    limits = httpx.Limits(max_connections=CONCURRENT, max_keepalive_connections=CONCURRENT)
    service = {"Authorization": f"Bearer {SERVICE_TOKEN}"}
    async with httpx.AsyncClient(base_url=base, timeout=60.0, limits=limits) as http:
        await asyncio.gather(*(http.get("/healthz") for _ in range(CONCURRENT)))
        session_id = (await http.post("/sessions", json={}, headers=service)).json()["id"]
        kinds: list[Callable[[], Awaitable[httpx.Response]]] = [
            lambda: http.get("/session", headers={"Mcp-Session-Id": session_id}),
            lambda: http.post("/sessions", json={}, headers=service),
            lambda: http.get(f"/sessions/{session_id}", headers=service),
        ]
        burst = [kinds[n % len(kinds)] for n in range(CONCURRENT)]
        _report(f"{label}: Redis answering", *await _burst(burst))
        os.kill(redis_pid, signal.SIGSTOP)
        try:
            _report(f"{label}: Redis hung", *await _burst(burst))
            _report(f"{label}: still hung", *await _burst(burst))
        finally:
            os.kill(redis_pid, signal.SIGCONT)


def serve(redis_url: str, extra: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    """A ``sessionstore serve`` child on a free port, once /healthz answers."""
    port = free_port()
    env = {
        **os.environ,
        "SESSIONSTORE_REDIS_URL": redis_url,
        "SESSIONSTORE_SERVICE_TOKENS": SERVICE_TOKEN,
        **extra,
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "sessionstore", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return server, base
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            server.kill()
            raise SystemExit("the replica did not start")
        time.sleep(0.05)


def main() -> None:
    print(f"{CONCURRENT} concurrent requests against one replica")
    for label, extra in [
        ("budget 0.75 s (default)", {}),
        ("no budget (peer)", {"SESSIONSTORE_REQUEST_REDIS_TIMEOUT": "60"}),
    ]:
        with LocalRedis() as redis:
            assert redis.process is not None
            server, base = serve(redis.url, extra)
            try:
                asyncio.run(run(base, redis.process.pid, label))
            finally:
                server.terminate()
                server.wait(30)


if __name__ == "__main__":
    main()
