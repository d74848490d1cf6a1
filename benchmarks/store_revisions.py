"""Client cost per call of the store's hot calls, this checkout's package beside another
git revision's, in one process.

The revision's ``sessionstore`` package is extracted with ``git archive`` and imported
under another name (``sessionstore_against``: the package imports itself relatively,
and its script libraries are renamed with it), so both stores, each on a client of its
own package, run in one process against one Redis, round by round (which goes first
alternates), under the same machine load. Per call it prints the wall time and the
process CPU time (``time.process_time``, which the machine's load inflates far less
than wall time) and the Redis server's CPU time (``INFO cpu`` deltas, networking
included: at concurrency 1 what ``peers.py`` prints as Redis CPU per request), medians
and minimums over the rounds, and the ratios of the medians. The leased request takes a
request lease with the session read and commits a one-attribute draft on its return.

    python benchmarks/store_revisions.py [--against main] [--calls 3000]
        [--rounds 9] [--concurrency 1] [--budget SECONDS] [--only NAME]

``--budget``: each call runs under the package's own ``command_budget`` (as the
server and the ASGI middleware run every request), set and reset per call.
``--only``: just the calls whose name holds NAME.

The last case is the counter route of ``peers.py`` (a Starlette route that
increments a counter in the request's session draft) behind each package's own
``SessionMiddleware``, called as an ASGI app (no HTTP client nor server, whose
Python would dwarf the difference): the middleware's per-request Python beside
the store's.

Uses SESSIONSTORE_REDIS_URL if set, else starts a private server.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import io
import statistics
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from _common import cost_per_call_with_server, median_and_min, redis_url
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import sessionstore

ROOT = Path(__file__).resolve().parent.parent
WARM_UP = 200
AGAINST = "sessionstore_against"

Op = Callable[[], Awaitable[object]]


def at_revision(revision: str) -> ModuleType:
    """The ``sessionstore`` package as `revision` has it, imported as `AGAINST`."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", revision, "sessionstore"],
        capture_output=True,
        check=True,
    ).stdout
    base = Path(tempfile.mkdtemp(prefix="store-revision-"))
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(base, filter="data")
    package = base / AGAINST
    (base / "sessionstore").rename(package)
    for path in package.rglob("*.py"):
        text = path.read_text()
        renamed = text.replace('ScriptLibrary("sessionstore.', f'ScriptLibrary("{AGAINST}.')
        if renamed != text:
            path.write_text(renamed)
    sys.path.insert(0, str(base))
    return importlib.import_module(AGAINST)


def hot_calls(
    package: ModuleType, url: str, prefix: str, budget: float | None = None
) -> tuple[Callable[[], Awaitable[None]], Callable[[], Awaitable[dict[str, Op]]]]:
    """A closer of `package`'s clients and a coroutine that makes its store's session
    and calls."""
    client = package.create_client(package.RedisSettings.from_dsn(url))
    settings = package.SessionSettings(key_prefix=prefix, shards=4, max_requests_per_session=0)
    store = package.SessionStore(client, settings)
    app = counter_app(package, store)

    async def prepare() -> dict[str, Op]:
        await store.load_scripts()
        sid = (await store.create(user_id="u1", state={"theme": "dark", "n": 0})).id

        async def cycle() -> None:
            session = await store.get(sid)
            await store.set_state(sid, {"n": int(session.state["n"]) + 1})

        async def track() -> None:
            async with store.track_request(sid):
                pass

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/counter",
            "raw_path": b"/counter",
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"bench"), (b"mcp-session-id", sid.encode())],
            "client": ("127.0.0.1", 1),
            "server": ("bench", 80),
        }

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def route() -> None:
            statuses: list[int] = []

            async def send(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    statuses.append(message["status"])

            await app(dict(scope), receive, send)
            assert statuses[0] in (200, 409), statuses  # 409: concurrent drafts

        calls: dict[str, Op] = {
            "get": lambda: store.get(sid),
            "set_state (1 attribute)": lambda: store.set_state(sid, {"x": 1}),
            "get + set_state": cycle,
            "track_request (begin+end)": track,
            "leased request, a draft": leased_request(store, sid),
            "counter route (middleware)": route,
        }
        return calls if budget is None else {k: budgeted(v) for k, v in calls.items()}

    def budgeted(op: Op) -> Op:
        async def call() -> object:
            with package.command_budget(budget):
                return await op()

        return call

    return client.aclose, prepare


def leased_request(store: Any, sid: str) -> Op:
    """A request lease that reads the session and commits a one-attribute draft."""

    async def leased() -> None:
        async with store.track_request(sid, read_session=True) as lease:
            lease.draft["n"] = int(lease.draft.get("n", 0)) + 1

    return leased


def counter_app(package: ModuleType, store: Any) -> Any:
    """The counter route of ``peers.py`` behind `package`'s own `SessionMiddleware`."""
    asgi = importlib.import_module(f"{package.__name__}.asgi")

    async def counter(request: Request) -> JSONResponse:
        draft = request.state.session_draft
        draft["n"] = n = draft.get("n", 0) + 1
        return JSONResponse({"n": n})

    return asgi.SessionMiddleware(Starlette(routes=[Route("/counter", counter)]), store)


async def run(
    url: str,
    against: str,
    calls: int,
    rounds: int,
    levels: list[int],
    budget: float | None,
    only: str = "",
) -> None:
    old = at_revision(against)
    this_close, this_prepare = hot_calls(sessionstore, url, "revthis", budget)
    old_close, old_prepare = hot_calls(old, url, "revold", budget)
    ways = {"this": await this_prepare(), against: await old_prepare()}
    raw: Redis = Redis.from_url(url)
    try:
        for concurrency in levels:
            figures: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
            for round_ in range(rounds):
                order = list(ways) if round_ % 2 == 0 else list(reversed(ways))
                for name in [name for name in ways["this"] if only in name]:
                    for way in order:
                        got = await cost_per_call_with_server(
                            ways[way][name], calls, concurrency, warm_up=WARM_UP, redis=raw
                        )
                        figures.setdefault((name, way), []).append(got)
            report(concurrency, against, figures)
    finally:
        await this_close()
        await old_close()
        await raw.aclose()


def report(
    concurrency: int,
    against: str,
    figures: dict[tuple[str, str], list[tuple[float, float, float]]],
) -> None:
    print(f"\nconcurrency {concurrency}   (per call: median / minimum over the rounds)")
    print(
        f"{'call':28} {'package':12} {'wall us':>15} {'cpu us':>15} {'cpu ratio':>10}"
        f" {'redis us':>15} {'redis ratio':>12}"
    )
    print("-" * 113)
    for (name, way), values in figures.items():
        wall, cpu, server = ([v[i] for v in values] for i in range(3))
        ratio = server_ratio = ""
        if way != "this":
            ours = figures[(name, "this")]
            ratio = f"{statistics.median(v[1] for v in ours) / statistics.median(cpu):.3f}"
            ours_server = statistics.median(v[2] for v in ours)
            server_ratio = f"{ours_server / statistics.median(server):.3f}"
        print(
            f"{name:28} {way:12} {median_and_min(wall)} {median_and_min(cpu)} {ratio:>10}"
            f" {median_and_min(server)} {server_ratio:>12}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", default="main")
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1])
    parser.add_argument("--budget", type=float, default=None)
    parser.add_argument("--only", default="", help="just the calls whose name holds this")
    args = parser.parse_args()
    with redis_url() as url:
        asyncio.run(
            run(
                url,
                args.against,
                args.calls,
                args.rounds,
                args.concurrency,
                args.budget,
                args.only,
            )
        )


if __name__ == "__main__":
    main()
