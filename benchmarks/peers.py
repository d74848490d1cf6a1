"""The store beside its peers: starsessions' RedisStore and raw redis-py, in one run.

Everything runs in this process against one Redis, case after case, at each
concurrency given. Per case it prints:

* ops/s seen by the client, and client round trips per operation (socket writes);
* Redis commands per operation (INFO commandstats, commands run inside scripts
  included) and Redis server microseconds per operation (commandstats ``usec``
  of the commands clients sent: the scripts themselves, or the plain commands);
* Redis process CPU per operation (INFO cpu, user + system, networking included);
* ratios to starsessions (the library a Starlette user would otherwise pick)
  and to raw redis-py (the same Redis work with plain commands, no guarantees).

The cases:

* library request cycle: read the session, write one attribute. starsessions:
  ``RedisStore.read`` + JSON + ``RedisStore.write`` (GET, SET EX); sessionstore:
  ``get`` + ``set_state``; and the same with a request lease held around it
  (the change staged in ``lease.draft``; as ``ss set_state``, by `set_state`).
* single operations beside raw redis-py: ``get`` (HGETALL), ``set_state``
  (HSET), ``track_request`` begin+end (ZADD, ZREM).
* a Starlette app whose route increments a counter in the session, behind
  sessionstore's `SessionMiddleware` (the change staged in the request's
  draft, committed with the lease's return; and, as ``ss set_state``, written
  by a `set_state` call) and behind starsessions' middleware, in-process
  through httpx's ASGI transport.
* Redis memory per session (``MEMORY USAGE`` of every key a session creates,
  index entries included, event streams left out because they are bounded):
  a small session (user id, two attributes) and one with ten 50-byte attributes.

    python benchmarks/peers.py [--ops 2000] [--concurrency 1 32] [--rounds 3] [--sessions 5000]

Uses SESSIONSTORE_REDIS_URL if set, else starts a private server. Figures
depend on the machine and its load; compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from _common import SENDS, measure, redis_url
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starsessions import SessionAutoloadMiddleware, load_session
from starsessions import SessionMiddleware as StarSessionMiddleware
from starsessions.serializers import JsonSerializer
from starsessions.stores.redis import RedisStore

from sessionstore import RedisSettings, SessionSettings, SessionStore, create_client
from sessionstore.asgi import SessionMiddleware

Op = Callable[[int], Awaitable[object]]
#: The peers that are sessionstore (the others are starsessions and raw redis-py).
THEIRS = ("starsessions", "redis-py")
#: sessionstore's ways over all cases: each works on sessions of its own (`own_sessions`).
STORE_WAYS = 8
#: Operations of each way's warm-up before its case.
WARM_UP = 200
LIFETIME = 3600
#: What starsessions keeps beside the data of every session.
STAR_METADATA = {"lifetime": LIFETIME, "created": 1.7e9, "last_access": 1.7e9}


@dataclass(frozen=True)
class Figures:
    """One case at one concurrency."""

    rate: float
    trips: float
    commands: float
    server_us: float
    cpu_us: float


class RedisMeter:
    """Deltas of INFO commandstats and INFO cpu around a measurement."""

    _SCRIPTED = ("evalsha", "eval", "fcall", "fcall_ro")
    _IGNORED = ("info", "config|resetstat")

    def __init__(self, client: Redis) -> None:
        self.client = client

    async def _sample(self) -> tuple[dict[str, tuple[int, int]], float]:
        stats = await self.client.info("commandstats")
        cpu = await self.client.info("cpu")
        commands = {
            name.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"]))
            for name, v in stats.items()
        }
        return commands, float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])

    async def run(self, count: int, concurrency: int, op: Op) -> Figures:
        before, cpu_before = await self._sample()
        rate, trips = await measure(count, concurrency, op)
        after, cpu_after = await self._sample()
        delta = {
            name: (calls - before.get(name, (0, 0))[0], usec - before.get(name, (0, 0))[1])
            for name, (calls, usec) in after.items()
            if name not in self._IGNORED
        }
        commands = sum(calls for calls, _ in delta.values())
        # Commands inside a script are counted in the script's usec and in their own:
        # when scripts ran, the scripts' time is the server time.
        outer = [n for n in delta if n in self._SCRIPTED and delta[n][0]] or list(delta)
        usec = sum(delta[n][1] for n in outer)
        cpu_us = (cpu_after - cpu_before) * 1e6
        return Figures(rate, trips, commands / count, usec / count, cpu_us / count)


def star_payload(data: dict[str, Any]) -> bytes:
    """A session as starsessions' middleware stores it."""
    return JsonSerializer().serialize({"__metadata__": STAR_METADATA, **data})


class Peers:
    """The stores and their sessions, one fresh key prefix per run."""

    def __init__(self, url: str, ops: int, rounds: int) -> None:
        self.ops = ops
        #: Sessions per way: the warm-up's, then each round's own.
        self.per_way = WARM_UP + rounds * ops
        self.prefix = "peers" + secrets.token_hex(3)
        self.client = create_client(RedisSettings.from_dsn(url))
        self.raw: Redis = Redis.from_url(url)  # bytes, as starsessions uses it
        self.store = SessionStore(
            self.client, SessionSettings(key_prefix=self.prefix, max_requests_per_session=0)
        )
        self.star = RedisStore(connection=self.raw, prefix=f"{self.prefix}:star:")
        self.ids: list[str] = []
        self.star_ids = [secrets.token_hex(16) for _ in range(self.per_way)]
        self.raw_keys = [f"{self.prefix}:raw:{{{i % 16}}}:session:{i}" for i in range(self.per_way)]

    async def setup(self) -> None:
        await self.store.load_scripts()
        state = {"theme": "dark", "n": 0}

        async def create(_: int) -> None:
            # Each session has served a request before, as one in use has: a session's
            # first lease also reclaims and counts (see lease.lua), its later ones not.
            made = await self.store.create(user_id="u1", state=state)
            async with self.store.track_request(made.id):
                self.ids.append(made.id)

        await measure(self.per_way * STORE_WAYS, 32, create)
        pipe = self.raw.pipeline(transaction=False)
        for i in range(self.per_way):
            pipe.set(self.star.prefix(self.star_ids[i]), star_payload(state), ex=LIFETIME)
            pipe.hset(self.raw_keys[i], mapping={"user_id": "u1", "a:theme": '"dark"', "a:n": "0"})
        await pipe.execute()

    # -- library request cycle -------------------------------------------------------

    async def star_cycle(self, i: int) -> None:
        sid = self.star_ids[i]
        data = JsonSerializer().deserialize(await self.star.read(sid, LIFETIME))
        data["n"] = data.get("n", 0) + 1
        await self.star.write(sid, JsonSerializer().serialize(data), LIFETIME, LIFETIME)

    async def store_cycle(self, i: int) -> None:
        session = await self.store.get(self.ids[i])
        await self.store.set_state(session.id, {"n": int(session.state["n"]) + 1})  # type: ignore[call-overload]

    async def store_tracked_cycle(self, i: int) -> None:
        async with self.store.track_request(self.ids[i], read_session=True) as lease:
            assert lease.session is not None
            n = int(lease.session.state["n"])  # type: ignore[call-overload]
            await self.store.set_state(lease.session_id, {"n": n + 1})

    async def store_draft_cycle(self, i: int) -> None:
        async with self.store.track_request(self.ids[i], read_session=True) as lease:
            assert lease.draft is not None
            lease.draft["n"] = int(lease.draft["n"]) + 1

    async def raw_cycle(self, i: int) -> None:
        fields = await self.raw.hgetall(self.raw_keys[i])
        await self.raw.hset(self.raw_keys[i], "a:n", str(int(fields[b"a:n"]) + 1))

    # -- single operations -------------------------------------------------------------

    async def store_track(self, i: int) -> None:
        async with self.store.track_request(self.ids[i]):
            pass

    async def raw_track(self, i: int) -> None:
        key = self.raw_keys[i] + ":requests"
        await self.raw.zadd(key, {"r": 1})
        await self.raw.zrem(key, "r")

    def cases(self) -> list[tuple[str, dict[str, Op]]]:
        """Each case: its name and the peers' ways of doing it."""
        return [
            (
                "read + write 1 attribute",
                {
                    "starsessions": self.star_cycle,
                    "sessionstore": self.store_cycle,
                    "redis-py": self.raw_cycle,
                },
            ),
            (
                "  same, with a request lease",
                {"sessionstore": self.store_draft_cycle, "ss set_state": self.store_tracked_cycle},
            ),
            (
                "get",
                {
                    "sessionstore": lambda i: self.store.get(self.ids[i]),
                    "redis-py": lambda i: self.raw.hgetall(self.raw_keys[i]),
                },
            ),
            (
                "set_state (1 attribute)",
                {
                    "sessionstore": lambda i: self.store.set_state(self.ids[i], {"x": i}),
                    "redis-py": lambda i: self.raw.hset(self.raw_keys[i], "a:x", str(i)),
                },
            ),
            (
                "track_request (begin+end)",
                {"sessionstore": self.store_track, "redis-py": self.raw_track},
            ),
        ]

    async def close(self) -> None:
        await self.client.aclose()
        await self.raw.aclose()


# -- the Starlette counter route behind each middleware -------------------------------


def sessionstore_app(store: SessionStore, *, draft: bool) -> Starlette:
    """The counter route behind sessionstore's middleware: the change staged in the
    request's draft (committed with the lease's return), or written by `set_state`."""

    async def counter(request: Request) -> JSONResponse:
        if draft:
            request.state.session_draft["n"] = n = request.state.session_draft.get("n", 0) + 1
            return JSONResponse({"n": n})
        session = request.state.session
        n = int(session.state.get("n", 0)) + 1
        await store.set_state(session.id, {"n": n})
        return JSONResponse({"n": n})

    app = Starlette(routes=[Route("/counter", counter)])
    return SessionMiddleware(app, store)  # type: ignore[return-value]


def starsessions_app(store: RedisStore) -> Starlette:
    """The same route behind starsessions' middleware (session loaded on demand)."""

    async def counter(request: Request) -> JSONResponse:
        await load_session(request)
        n = int(request.session.get("n", 0)) + 1
        request.session["n"] = n
        return JSONResponse({"n": n})

    app = Starlette(routes=[Route("/counter", counter)])
    return StarSessionMiddleware(  # type: ignore[return-value]
        SessionAutoloadMiddleware(app, paths=["/never"]),
        store=store,
        lifetime=LIFETIME,
        cookie_https_only=False,
    )


def route_ops(peers: Peers) -> dict[str, tuple[httpx.AsyncClient, Op]]:
    """For each middleware: its client and one request of the counter route."""

    def client(app: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench")

    theirs = client(starsessions_app(peers.star))
    ours = client(sessionstore_app(peers.store, draft=True))
    ours_set = client(sessionstore_app(peers.store, draft=False))

    def sessionstore_request(http: httpx.AsyncClient) -> Op:
        async def request(i: int) -> None:
            reply = await http.get("/counter", headers={"Mcp-Session-Id": peers.ids[i]})
            assert reply.status_code == 200, reply.text

        return request

    async def starsessions_request(i: int) -> None:
        reply = await theirs.get("/counter", cookies={"session": peers.star_ids[i]})
        assert reply.status_code == 200, reply.text

    return {
        "starsessions": (theirs, starsessions_request),
        "sessionstore": (ours, sessionstore_request(ours)),
        "ss set_state": (ours_set, sessionstore_request(ours_set)),
    }


# -- memory per session -------------------------------------------------------------


async def memory_per_session(url: str, count: int) -> dict[str, dict[str, float]]:
    """Bytes of Redis memory per session, by key kind, for both stores."""
    client = create_client(RedisSettings.from_dsn(url))
    raw: Redis = Redis.from_url(url)
    small = {"theme": "dark", "n": 1}
    large = {f"attr{i}": "x" * 48 for i in range(10)}  # 48 chars + quotes = 50 bytes of JSON
    out: dict[str, dict[str, float]] = {}
    try:
        prefix = await memory_prefix(raw)
        for label, state in (("small", small), ("10 x 50 B", large)):
            store = SessionStore(client, SessionSettings(key_prefix=prefix))
            for _ in range(count):
                await store.create(user_id=f"user{secrets.token_hex(4)}", state=state)
            out[f"sessionstore {label}"] = await _usage(raw, prefix, count)
            star_prefix = prefix + ":star:"
            pipe = raw.pipeline(transaction=False)
            for _ in range(count):
                pipe.set(star_prefix + secrets.token_hex(16), star_payload(state), ex=LIFETIME)
            await pipe.execute()
            out[f"starsessions {label}"] = await _usage(raw, star_prefix, count)
            await _drop(raw, prefix)
    finally:
        await client.aclose()
        await raw.aclose()
    return out


async def memory_prefix(raw: Redis) -> str:
    """The store's default key prefix when nothing uses it (the private server), else a
    fresh one: a key name's length moves it between the allocator's size classes, so the
    figure users get is the one under the default prefix."""
    default = SessionSettings().key_prefix
    async for _ in raw.scan_iter(match=default + ":*", count=1000):
        return "mem" + secrets.token_hex(3)
    return default


async def _usage(raw: Redis, prefix: str, count: int) -> dict[str, float]:
    """Bytes per session by key kind under `prefix` (a sessionstore prefix or starsessions')."""
    by_kind: dict[str, float] = {}
    async for key in raw.scan_iter(match=prefix + "*", count=1000):
        kind = _kind(key.decode().removeprefix(prefix))
        if kind is None:
            continue
        size = await raw.memory_usage(key, samples=0)
        by_kind[kind] = by_kind.get(kind, 0) + (size or 0) / count
    by_kind["total"] = sum(by_kind.values())
    return by_kind


def _kind(rest: str) -> str | None:
    """`session`, `expiry`, `user index`, ... for a key without its prefix; None for keys
    that do not grow with the sessions (a shard's event stream and counters) or belong to
    the other store."""
    parts = rest.split(":")
    if len(parts) == 1:
        return "value"  # a starsessions key: prefix + session id
    if parts[1] == "star":
        return None
    if parts[1] == "users":
        return "user index"  # the shared hashes hold only this run's users
    kind = parts[2]
    if kind == "due":
        return "expiry index"  # its time buckets, their counts and their root
    return None if kind in ("events", "stats") else kind


async def _drop(raw: Redis, prefix: str) -> None:
    keys = [key async for key in raw.scan_iter(match=prefix + ":*", count=1000)]
    for start in range(0, len(keys), 500):
        await raw.delete(*keys[start : start + 500])


# -- the run ------------------------------------------------------------------------


def _row(name: str, peer: str, f: Figures, star: Figures | None, raw: Figures | None) -> str:
    vs_star = f"{f.rate / star.rate:5.2f}x {f.cpu_us / star.cpu_us:5.2f}x" if star else " " * 13
    vs_raw = f"{f.rate / raw.rate:5.2f}x" if raw else ""
    return (
        f"{name:30} {peer:13} {f.rate:8.0f} {f.trips:5.2f} {f.commands:6.1f} {f.server_us:8.1f}"
        f" {f.cpu_us:8.1f}  {vs_star}  {vs_raw}"
    )


def _table(
    peers: Peers, routes: dict[str, tuple[httpx.AsyncClient, Op]]
) -> list[tuple[str, dict[str, Op]]]:
    """Every case with its peers' ways, each of sessionstore's on sessions of its own."""
    table = [
        *peers.cases(),
        ("counter route (middleware)", {k: op for k, (_, op) in routes.items()}),
    ]
    ways_seen = 0
    for _, ways in table:
        for peer, op in ways.items():
            if peer not in THEIRS:
                ways[peer] = own_sessions(op, ways_seen * peers.per_way)
                ways_seen += 1
    assert ways_seen <= STORE_WAYS, "each sessionstore way needs sessions of its own"
    return table


def own_sessions(op: Op, offset: int) -> Op:
    """`op` on sessions no other way touches: a session written by one way would be
    written again a moment later by the next, a burst, which builds before the lazy
    expiry index wrote the index for once per step of the deadline where a request of
    its own would write it (so revisions stay comparable)."""
    return shifted(op, offset)


def shifted(op: Op, offset: int) -> Op:
    """`op` on the sessions `offset` further on."""

    async def on_further(i: int) -> object:
        return await op(i + offset)

    return on_further


def _median(runs: list[Figures]) -> Figures:
    """Each figure's median over the rounds."""
    return Figures(
        *(
            statistics.median(getattr(f, name) for f in runs)
            for name in ("rate", "trips", "commands", "server_us", "cpu_us")
        )
    )


async def run(url: str, ops: int, concurrencies: list[int], rounds: int, sessions: int) -> None:
    peers = Peers(url, ops, rounds)
    await peers.setup()
    meter = RedisMeter(peers.raw)
    routes = route_ops(peers)
    print(f"redis: {url}   ops per case: {ops}   rounds: {rounds} (medians)")
    header = (
        f"{'case':30} {'peer':13} {'ops/s':>8} {'RT/op':>5} {'cmd/op':>6} {'srv us':>8}"
        f" {'cpu us':>8}  {'vs starsessions':>13}  {'vs redis-py'}"
    )
    for concurrency in concurrencies:
        print(
            f"\nconcurrency {concurrency}   (vs starsessions: ops/s ratio, Redis CPU ratio;"
            " a leased request beside starsessions' read + write)"
        )
        print(header)
        print("-" * len(header))
        star: Figures | None = None
        for name, ways in _table(peers, routes):
            runs: dict[str, list[Figures]] = {peer: [] for peer in ways}
            for op in ways.values():
                await measure(WARM_UP, concurrency, op)  # warm up
            # The warm-up and each round on sessions of their own, so no measured one is
            # written twice in a moment (a burst: see own_sessions).
            for r in range(rounds):  # peers alternate, so both see the same machine load
                for peer, op in ways.items():
                    at = WARM_UP + r * ops
                    runs[peer].append(await meter.run(ops, concurrency, shifted(op, at)))
            figures = {peer: _median(found) for peer, found in runs.items()}
            # A leased request is set beside starsessions' plain read + write.
            star = figures.get("starsessions", star if "lease" in name else None)
            raw = figures.get("redis-py")
            for peer, f in figures.items():
                print(_row(name, peer, f, star if peer != "starsessions" else None, raw))
    for client, _ in routes.values():
        await client.aclose()
    await peers.close()
    SENDS.clear()
    memory = await memory_per_session(url, sessions)
    print("\nRedis memory per session (MEMORY USAGE of every key, index entries included)")
    for label, kinds in memory.items():
        parts = ", ".join(f"{k} {v:.0f}" for k, v in kinds.items() if k != "total")
        print(f"{label:26} {kinds['total']:6.0f} B   ({parts})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--rounds", type=int, default=3)
    # Enough that each shard's expiry index leaves the compact (listpack) encoding, as in
    # production.
    parser.add_argument("--sessions", type=int, default=5000, help="for the memory figures")
    args = parser.parse_args()
    with redis_url() as url:
        asyncio.run(run(url, args.ops, args.concurrency, args.rounds, args.sessions))


if __name__ == "__main__":
    main()
