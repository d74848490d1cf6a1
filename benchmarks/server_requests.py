"""What serving a session over HTTP costs: requests per second and Redis round trips.

Four measurements in the same process, against the same Redis, in the same run:

* ``store.get``            the store call alone, no HTTP (the Redis baseline)
* ``GET /healthz``         the HTTP stack alone, no Redis (the framework baseline)
* ``GET /sessions/{id}``   one store read behind FastAPI
* ``GET /session``         the same read through `SessionMiddleware`: take a request
                           lease, read the session, return the lease

The app runs in-process (httpx's ASGI transport, its lifespan driven here), so
the figures are the code's cost without network noise.

    python benchmarks/server_requests.py [--requests 3000] [--concurrency 16]

Uses SESSIONSTORE_REDIS_URL if set, else starts a private server.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
from typing import Any

import httpx
from _common import measure, redis_url
from pydantic import SecretStr

from sessionstore import SessionStore, Settings
from sessionstore.server import create_app


async def run(url: str, count: int, concurrency: int) -> None:
    token = secrets.token_urlsafe(32)
    settings = Settings(
        redis_url=url,
        key_prefix="bench" + secrets.token_hex(3),
        service_tokens=SecretStr(token),
    )
    app = create_app(settings)
    # The reads by id go as a backend does (a service token, no lease), /session as a client.
    service = {"Authorization": f"Bearer {token}"}
    async with app.router.lifespan_context(app) as state:
        store: SessionStore = state["session_store"]

        async def with_state(scope: Any, receive: Any, send: Any) -> None:
            await app({**scope, "state": dict(state)}, receive, send)

        transport = httpx.ASGITransport(app=with_state)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bench", headers=service
        ) as http:
            made = (await http.post("/sessions", json={"state": {"n": 1}})).json()["id"]
            header = {"Mcp-Session-Id": made}

            async def healthz(_: int) -> None:
                assert (await http.get("/healthz")).status_code == 200

            async def read(_: int) -> None:
                assert (await http.get(f"/sessions/{made}")).status_code == 200

            async def current(_: int) -> None:
                assert (await http.get("/session", headers=header)).status_code == 200

            rows = [
                ("store.get (no HTTP)", lambda _: store.get(made)),
                ("GET /healthz (no Redis)", healthz),
                ("GET /sessions/{id}", read),
                ("GET /session (middleware)", current),
            ]
            results = {}
            for name, call in rows:
                await measure(min(200, count), concurrency, call)  # warm up
                results[name] = await measure(count, concurrency, call)
    print(f"{count} calls each, {concurrency} concurrent, Redis at {url}")
    print(f"{'call':30} {'per second':>12} {'round trips':>12}")
    for name, (rate, trips) in results.items():
        print(f"{name:30} {rate:12.0f} {trips:12.2f}")
    plain = results["GET /sessions/{id}"][0]
    tracked = results["GET /session (middleware)"][0]
    print(f"middleware request / plain read: {tracked / plain:.2f}x the rate")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    with redis_url() as url:
        asyncio.run(run(url, args.requests, args.concurrency))


if __name__ == "__main__":
    main()
