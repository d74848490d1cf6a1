"""A hung Redis against a real ``sessionstore serve``: how long 150 concurrent requests
wait for their 503.

Starts a private Redis and one replica (``python -m sessionstore serve``), opens 150
keep-alive connections, then sends the same burst of 150 concurrent requests (a third
each: a leased read of the current session, a create, a read by id) twice: with Redis
answering (the peer figure, what the machine costs per burst) and with Redis stopped
by SIGSTOP (connections stay open, nothing answers). Prints p50, p99 and max per
burst and the statuses. Run: ``python benchmarks/hung_redis.py``.
"""

from __future__ import annotations

import asyncio
import os
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
        f"{label:<22} p50 {statistics.median(took) * 1000:7.0f} ms   "
        f"p99 {_quantile(took, 0.99) * 1000:7.0f} ms   max {max(took) * 1000:7.0f} ms   "
        f"statuses {dict(sorted(statuses.items()))}"
    )


async def run(base: str, redis_pid: int) -> None:
    limits = httpx.Limits(max_connections=CONCURRENT, max_keepalive_connections=CONCURRENT)
    async with httpx.AsyncClient(base_url=base, timeout=60.0, limits=limits) as http:
        await asyncio.gather(*(http.get("/healthz") for _ in range(CONCURRENT)))
        session_id = (await http.post("/sessions", json={})).json()["id"]
        kinds: list[Callable[[], Awaitable[httpx.Response]]] = [
            lambda: http.get("/session", headers={"Mcp-Session-Id": session_id}),
            lambda: http.post("/sessions", json={}),
            lambda: http.get(f"/sessions/{session_id}"),
        ]
        burst = [kinds[n % len(kinds)] for n in range(CONCURRENT)]
        _report("Redis answering", *await _burst(burst))
        os.kill(redis_pid, signal.SIGSTOP)
        try:
            _report("Redis hung (SIGSTOP)", *await _burst(burst))
            _report("still hung", *await _burst(burst))
        finally:
            os.kill(redis_pid, signal.SIGCONT)


def main() -> None:
    with LocalRedis() as redis:
        assert redis.process is not None
        port = free_port()
        env = {**os.environ, "SESSIONSTORE_REDIS_URL": redis.url}
        server = subprocess.Popen(
            [sys.executable, "-m", "sessionstore", "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the replica did not start")
                time.sleep(0.05)
            print(f"{CONCURRENT} concurrent requests against one replica, default settings")
            asyncio.run(run(base, redis.process.pid))
        finally:
            server.terminate()
            server.wait(30)


if __name__ == "__main__":
    main()
