"""Redis CPU per call of the store's scripts at this checkout beside another git revision's.

The hot scripts' calls are captured once from real store operations (touch,
a state write, a request lease that reads the session and commits a draft:
lease, lease_release; and a plain tracked request: its lease neither reads nor
commits), then replayed many times with this checkout's script and with the
revision's (each alone, and each request's take and return one after the
other, as a request makes them), pipelined (networking shared out), alternating
round by round on one Redis, so both see the same machine load. ``--sweep-live N``
also sweeps 10k due sessions, alternately with each version's sweep script, in
a store of N live sessions (the sweep's cost per expired session should not
depend on N); only the sweep is measured, not the loading of the due sessions.
Redis CPU is INFO cpu (user + system) per call or per expired session.

A script replayed on one session is a burst. Builds before the lazy expiry index
moved the index entry once per step of the deadline (a 64th of the idle timeout),
so there the burst rows are the cost of a burst's later requests and a ``--gap``
above a step (28 s at the default 30 minutes) makes every spaced call write the
index; now a slide never writes it.
The ``, spaced`` rows replay each call on another of 500 sessions whose last
activity is set ``--gap`` seconds back before each pipeline (outside the
measured CPU): the cost of requests of a session that many seconds apart, as
in ``benchmarks/peers.py``.
Every replay starts from sessions that hold none of the replayed leases: a take
replayed alone takes its captured lease id again and again (from its second call
on, beside itself: the path of overlapping requests), and would otherwise leave
it held for the rows after it.
The captured draft commit is replayed at a version that has moved on, so the
``lease_release`` rows are a refused commit (the lease returned, the deadline
slid, nothing written).

    python benchmarks/script_revisions.py [--against main] [--calls 5000] [--rounds 5]
        [--gap 2] [--one-by-one] [--sweep-live 1000000]

``--one-by-one`` sends each replayed request as a request does at concurrency 1:
its round trips one after the other (a script call with the plain commands after
it), each waited for, so every call pays its own wake-up and cold caches as in
``benchmarks/peers.py`` at c=1, instead of a share of a pipeline of 500.

The revision's scripts must take the same ARGV as this checkout's, but for the session
id that builds before the hot scripts dropped it take first (given to them from the
record key); their KEYS are matched by name (the scripts' ``-- KEYS:`` headers), and a
session key this checkout no longer has (the lease sorted sets of earlier builds) is
named as those builds named it.
The ``create`` and ``end`` rows create that many new sessions (a small state, their
own users) and then delete them, each revision on a key prefix of its own.
The ``lease`` rows include the plain HGETALL that the take sends right after the
script when it reads the session (builds that read it inside the script send none), and
a ``get`` row compares the plain commands of a read (not a script: its keys named as
each revision's read names them). Before each round the records replayed on get the
field names of the revision replayed (the long ones of builds before the short names,
outside the measured CPU), in the order the store wrote them.
Uses SESSIONSTORE_REDIS_URL if set (not with --sweep-live), else starts a private server.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import subprocess
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from _common import redis_url
from redis.asyncio import Redis
from sweep_cost import drop_tombstones, load, wait_overdue

from sessionstore import (
    RedisSettings,
    SessionSettings,
    SessionStore,
    create_client,
    new_session_id,
    sweep_store,
)
from sessionstore._scripts import (
    _KEYS_HEADER,
    _SESSION_KEYS,
    Arg,
    Batch,
    LuaScript,
    _compose,
    _used_prelude,
)
from sessionstore.store._lua import script
from sessionstore.testing import LocalRedis

HOT = ("touch", "write_state", "lease", "lease_release")
#: The rows beyond HOT: a plain tracked request's calls (label: script, which of its calls).
PLAIN = {"lease, no read": ("lease", 1), "lease_release, no commit": ("lease_release", 1)}
#: A request's take and return, by label.
REQUESTS = {
    "lease + lease_release": ("lease", "lease_release"),
    "the same, no read, no commit": ("lease, no read", "lease_release, no commit"),
}
PIPELINE = 500
#: This checkout's record field names and the long ones of the builds before them.
LONG_NAMES = {
    "created": "created_at",
    "idle_ms": "idle_timeout_ms",
    "idle_end": "idle_deadline",
    "life_end": "absolute_deadline",
    "attrs": "state_count",
    "attr_bytes": "state_bytes",
}
#: Write a record (KEYS[1]) again with its fields renamed (ARGV: from, to, ...), in
#: the same order and with the same TTL.
RENAME_FIELDS = """
local f = redis.call('HGETALL', KEYS[1])
if #f == 0 then return 0 end
local ttl, to = redis.call('PTTL', KEYS[1]), {}
for i = 1, #ARGV, 2 do to[ARGV[i]] = ARGV[i + 1] end
local args = {'HSET', KEYS[1]}
for i = 1, #f, 2 do
  args[#args + 1] = to[f[i]] or f[i]
  args[#args + 1] = f[i + 1]
end
redis.call('DEL', KEYS[1])
redis.call(unpack(args))
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
"""
ROOT = Path(__file__).resolve().parent.parent


def show(revision: str, path: str) -> str:
    """A file as `revision` has it."""
    return subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{revision}:{path}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def at_revision(revision: str, name: str) -> tuple[LuaScript, list[str] | None]:
    """The store script `name` as `revision` composes it (its prelude and its file), and
    the session keys its header names (None: all of them)."""
    prelude = show(revision, "sessionstore/_prelude.lua")
    body = show(revision, f"sessionstore/store/lua/{name}.lua")
    header = _KEYS_HEADER.search(body)
    names = [n.strip() for n in header.group(1).split(",")] if header else None
    if "SESSION_KEYS" not in prelude:  # a build that composes as this one does
        return _compose(name, prelude, "", body), names
    # Builds before each script had a session_keys of its own for its declared keys.
    declared = "{" + ", ".join(f"'{n}'" for n in names) + "}" if names else "nil"
    source = f"local SESSION_KEYS = {declared}\n" + _used_prelude(prelude, body) + "\n" + body
    return LuaScript(name, source), names


def field_names(revision: str) -> dict[str, str]:
    """How `revision` names the record fields this checkout names (keys of LONG_NAMES)."""
    if "'idle_end'" in show(revision, "sessionstore/_prelude.lua"):
        return {name: name for name in LONG_NAMES}
    return dict(LONG_NAMES)


class Layout:
    """The records a replay runs on, and each way's field names (revision's, this one's)."""

    def __init__(self, records: list[str], ways: list[dict[str, str]]) -> None:
        self.records, self.ways = records, ways

    async def apply(self, raw: Redis, way: int) -> None:
        """Give every record the field names of `way` (whichever names it has now)."""
        names = self.ways[way]
        renames = [
            (other, names[ours])
            for ours, long in LONG_NAMES.items()
            for other in (ours, long)
            if other != names[ours]
        ]
        flat = [name for pair in renames for name in pair]
        pipe = raw.pipeline(transaction=False)
        for record in self.records:
            pipe.eval(RENAME_FIELDS, 1, record, *flat)
        await pipe.execute()

    def idle_end(self, way: int) -> str:
        """The idle deadline's field name in `way`."""
        return self.ways[way]["idle_end"]


def key_names(lua: LuaScript) -> list[str]:
    """The names of the session keys this checkout sends `lua`."""
    if lua.key_picks is None:
        return list(_SESSION_KEYS)
    return [_SESSION_KEYS[i] for i in lua.key_picks]


def renamed(
    call: tuple[Any, ...], ours: list[str], theirs: list[str] | None, with_id: bool = False
) -> tuple[Any, ...]:
    """A captured call (numkeys, keys, args) of this checkout's script, with the keys a
    script declaring `theirs` takes; one this checkout lacks is named after the record
    (``...:session:<id>`` -> ``...:<name>:<id>``). `with_id`: the revision's script
    takes the session id as its first ARGV (builds before the hot scripts dropped it),
    taken from the record key."""
    count = int(call[0])
    keys, args = dict(zip(ours, call[1 : 1 + count], strict=True)), call[1 + count :]
    record = keys["record"]
    if with_id:
        args = (record.rpartition(":")[2], *args)
    if theirs is None or theirs == ours:
        return (count, *call[1 : 1 + count], *args)
    sent = [keys.get(n) or record.replace(":session:", f":{n}:") for n in theirs]
    return (len(sent), *sent, *args)


def takes_session_id(revision: str | None, name: str) -> bool:
    """Whether `revision`'s script `name` (None: this checkout's) takes the session id as
    its first ARGV."""
    path = f"sessionstore/store/lua/{name}.lua"
    source = (ROOT / path).read_text() if revision is None else show(revision, path)
    return "-- ARGV: session_id" in source


async def capture(store: SessionStore) -> tuple[str, dict[str, tuple[Any, ...]]]:
    """The session's id, and each hot script's first call (numkeys, keys, args) from real
    store operations on it and the plain tracked request's (PLAIN), by label."""
    seen: dict[str, list[tuple[Any, ...]]] = {name: [] for name in HOT}
    by_sha = {script(name).sha: name for name in HOT}
    client: Any = store.redis
    send, queue = client.execute_command, Batch.script
    multiplexed = getattr(client, "send_commands", None)

    def saw(args: tuple[Any, ...]) -> None:
        if args[0] == "EVALSHA" and args[1] in by_sha:
            seen[by_sha[args[1]]].append(args[2:])

    async def sending(*args: Any, **options: Any) -> Any:
        saw(args)
        return await send(*args, **options)

    # A client of `create_client` sends the store's calls on its multiplexed connection.
    async def sending_together(commands: list[tuple[Any, ...]]) -> Any:
        for args in commands:
            saw(args)
        return await multiplexed(commands)

    def queued(batch: Batch, lua: LuaScript, keys: list[str], args: list[Arg]) -> int:
        picked = lua.keys_for(keys)
        if lua.name in seen:
            seen[lua.name].append((len(picked), *picked, *args))
        return queue(batch, lua, keys, args)

    client.execute_command = sending
    if multiplexed is not None:
        client.send_commands = sending_together  # a batch's calls too
    else:
        Batch.script = queued  # type: ignore[method-assign,assignment]
    try:
        made = await store.create(state={"theme": "dark", "n": 1})
        await store.touch(made.id)
        await store.set_state(made.id, {"n": 2})
        async with store.track_request(made.id, read_session=True) as lease:
            assert lease.draft is not None
            lease.draft["n"] = 3
        async with store.track_request(made.id):
            pass
    finally:
        client.execute_command = send
        if multiplexed is not None:
            client.send_commands = multiplexed
        Batch.script = queue  # type: ignore[method-assign]
    captured = {name: seen[name][0] for name in HOT}
    return made.id, captured | {label: seen[name][at] for label, (name, at) in PLAIN.items()}


async def redis_cpu(raw: Redis) -> float:
    info = await raw.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


class Spacing:
    """Where a replay's calls go: all to the captured session (a burst), or each to
    another of `sessions` (copies of it, each with its record key and the renames that
    aim the captured commands at it: id and shard tag), whose last activity is set
    `gap_ms` back before each pipeline."""

    def __init__(
        self,
        sessions: list[tuple[str, list[tuple[str, str]]]] | None = None,
        idle_ms: int = 0,
        gap_ms: int = 0,
    ) -> None:
        self.sessions, self.idle_ms, self.gap_ms = sessions or [], idle_ms, gap_ms

    def step_for(self, step: tuple[Any, ...], i: int) -> tuple[Any, ...]:
        """The captured command `step` aimed at the i-th session of a pipeline."""
        if not self.sessions:
            return step
        renames = self.sessions[i % len(self.sessions)][1]

        def aimed(arg: Any) -> Any:
            if isinstance(arg, str):
                for old, new in renames:
                    arg = arg.replace(old, new)
            return arg

        return tuple(aimed(a) for a in step)

    async def set_back(self, raw: Redis, idle_end: str) -> None:
        """Each session's idle deadline (field `idle_end`) as if its last request was
        `gap_ms` ago."""
        if not self.sessions:
            return
        seconds, micros = await raw.time()
        idle = seconds * 1000 + micros // 1000 + self.idle_ms - self.gap_ms
        pipe = raw.pipeline(transaction=False)
        for record, _ in self.sessions:
            pipe.hset(record, idle_end, idle)
        await pipe.execute()


BURST = Spacing()


def spaced_copies(store: SessionStore, captured_id: str, copies: list[str], gap: float) -> Spacing:
    """A spacing over `copies` of the captured session, `gap` seconds apart."""
    tag = f"{{{store.session_keys(captured_id).shard}}}"
    sessions = [
        (
            store.session_keys(c).record,
            [(captured_id, c), (tag, f"{{{store.session_keys(c).shard}}}")],
        )
        for c in copies
    ]
    idle_ms = round(store.settings.idle_timeout.total_seconds() * 1000)
    return Spacing(sessions, idle_ms, round(gap * 1000))


def lease_fields(captured: dict[str, tuple[Any, ...]]) -> list[str]:
    """Every record field the captured takes' leases may leave: in the kind's slot (of
    this checkout), in a field of their own, and the count of those."""
    names = ["r", "request_leases"]
    for label in ("lease", "lease, no read"):
        call = captured[label]
        names.append(f"r:{call[1 + int(call[0]) + 1]}")  # ARGV: kind, lease_id, ...
    return names


async def clear_leases(raw: Redis, records: list[str], fields: list[str]) -> None:
    """Drop the replayed leases from `records`, so that every replay starts from a
    session holding none (a take replayed alone holds its lease id from its first call
    on; without this, the rows after it would find it held and count it)."""
    pipe = raw.pipeline(transaction=False)
    for record in records:
        pipe.hdel(record, *fields)
    await pipe.execute()


def round_trips(steps: list[tuple[Any, ...]]) -> list[list[tuple[Any, ...]]]:
    """`steps` as a request sends them: each script call in a round trip of its own,
    with the plain commands after it (the take's read of the session)."""
    trips: list[list[tuple[Any, ...]]] = []
    for step in steps:
        if step[0] == "EVALSHA" or not trips:
            trips.append([])
        trips[-1].append(step)
    return trips


async def replay(
    raw: Redis,
    steps: list[tuple[Any, ...]],
    calls: int,
    idle_end: str,
    spacing: Spacing = BURST,
    one_by_one: bool = False,
) -> float:
    """Redis CPU us per replay of `steps` (commands: EVALSHA sha with a call's keys and
    args, or plain ones, one after the other) on records naming the idle deadline
    `idle_end`, pipelined by 500 or (`one_by_one`) in the request's own round trips,
    one after the other as at concurrency 1; the setting back of a spaced replay's
    sessions is not counted."""
    spent = 0.0
    for _ in range(calls // PIPELINE):
        await spacing.set_back(raw, idle_end)
        if one_by_one:
            trips = round_trips(steps)
            before = await redis_cpu(raw)
            for i in range(PIPELINE):
                for trip in trips:
                    pipe = raw.pipeline(transaction=False)
                    for step in trip:
                        pipe.execute_command(*spacing.step_for(step, i))
                    await pipe.execute(raise_on_error=False)
            spent += await redis_cpu(raw) - before
            continue
        pipe = raw.pipeline(transaction=False)
        for i in range(PIPELINE):
            for step in steps:
                pipe.execute_command(*spacing.step_for(step, i))
        before = await redis_cpu(raw)
        await pipe.execute(raise_on_error=False)
        spent += await redis_cpu(raw) - before
    return spent * 1e6 / (calls // PIPELINE * PIPELINE)


def report(label: str, figures: dict[str, list[float]], unit: str) -> None:
    theirs, ours = (statistics.median(v) for v in figures.values())
    print(f"{label:36} {theirs:8.2f} {ours:8.2f} {unit:14} {ours / theirs:5.2f}")


async def hot_scripts(
    url: str, revision: str, calls: int, rounds: int, gap: float, one_by_one: bool = False
) -> None:
    client = create_client(RedisSettings.from_dsn(url))
    raw: Redis = Redis.from_url(url)
    store = SessionStore(client, SessionSettings(key_prefix="revs", max_requests_per_session=0))
    await store.load_scripts()
    captured_id, captured = await capture(store)
    copies = [(await store.create(state={"theme": "dark", "n": 1})).id for _ in range(PIPELINE)]
    spaced = spaced_copies(store, captured_id, copies, gap)
    # Each script alone, then a request lease's whole life: the take (with the session
    # read, or not) and the return (with the draft's commit, or not), as a request makes
    # them, one after the other on the same session.
    rows = {label: (label,) for label in (*HOT, *PLAIN)} | REQUESTS
    record = str(captured["touch"][1])
    layout = Layout(
        [record, *(store.session_keys(c).record for c in copies)],
        [field_names(revision), {name: name for name in LONG_NAMES}],
    )
    for row, labels in rows.items():
        ways: list[list[tuple[Any, ...]]] = [[], []]
        for label in labels:
            name = PLAIN[label][0] if label in PLAIN else label
            (theirs, their_keys), ours = at_revision(revision, name), script(name)
            call = captured[label]
            with_id = takes_session_id(revision, name) and not takes_session_id(None, name)
            ways[0].append(
                (
                    "EVALSHA",
                    await raw.script_load(theirs.source),
                    *renamed(call, key_names(ours), their_keys, with_id),
                )
            )
            ways[1].append(("EVALSHA", await raw.script_load(ours.source), *call))
            if label == "lease":  # the take's read of the session, right after the script
                ways[1].append(("HGETALL", record))
                if "call('HGETALL'" not in show(revision, "sessionstore/store/lua/lease.lua"):
                    ways[0].append(("HGETALL", record))  # the revision reads it so too
        for suffix, spacing in (("", BURST), (", spaced", spaced)):
            one = len(labels) == 1
            fresh = (layout.records, lease_fields(captured))
            await compare(
                raw,
                row + suffix,
                ways,
                revision,
                calls,
                rounds,
                one,
                layout,
                spacing,
                fresh,
                one_by_one,
            )
    get = reads(revision, record)
    await compare(raw, "get", get, revision, calls, rounds, True, layout, one_by_one=one_by_one)
    await client.aclose()
    await raw.aclose()


def reads(revision: str, record: str) -> list[list[tuple[Any, ...]]]:
    """The plain commands of a `get` as `revision` sends them, and as this checkout does."""
    read = show(revision, "sessionstore/store/_read.py")
    tomb = record.replace(":session:", ":tomb:")
    ours: list[tuple[Any, ...]] = [("TIME",), ("HGETALL", record), ("HGETALL", tomb)]
    theirs = list(ours)
    if "keys.requests" in read:  # lease sets of their own
        theirs[2:2] = [
            ("ZRANGE", record.replace(":session:", f":{name}:"), 0, -1, "WITHSCORES")
            for name in ("requests", "conns")
        ]
    return [theirs, ours]


async def compare(
    raw: Redis,
    row: str,
    ways: list[list[tuple[Any, ...]]],
    revision: str,
    calls: int,
    rounds: int,
    one: bool,
    layout: Layout,
    spacing: Spacing = BURST,
    fresh: tuple[list[str], list[str]] | None = None,
    one_by_one: bool = False,
) -> None:
    """Replay both ways round by round, alternating, each on records laid out with its
    field names, and report the medians; with `fresh` (records, lease fields), each
    replay starts without the replayed leases."""
    figures: dict[str, list[float]] = {revision: [], "this": []}
    for _ in range(rounds):
        for i, (way, steps) in enumerate(zip(figures, ways, strict=True)):
            await layout.apply(raw, i)
            if fresh is not None:
                await clear_leases(raw, *fresh)
            idle_end = layout.idle_end(i)
            figures[way].append(await replay(raw, steps, calls, idle_end, spacing, one_by_one))
    report(row, figures, "us per call" if one else "us per request")


async def sweeps(revision: str, live: int, rounds: int, due: int = 10_000) -> None:
    with LocalRedis() as server:
        settings = RedisSettings.from_dsn(server.url, socket_timeout=timedelta(seconds=60))
        store = SessionStore(create_client(settings), SessionSettings(shards=16))
        await store.load_scripts()
        await load(store, live, timedelta(hours=1))
        ours = script("sweep")
        ways: dict[str, Callable[[], Awaitable[float]]] = {}
        figures: dict[str, list[float]] = {revision: [], "this": []}
        scripts = (at_revision(revision, "sweep")[0], ours)
        names = (field_names(revision), {name: name for name in LONG_NAMES})
        for way, lua, fields in zip(figures, scripts, names, strict=True):
            ways[way] = _sweep_with(store, lua, due, fields)
        for _ in range(rounds):
            for way, sweep in ways.items():
                figures[way].append(await sweep() * 1e6 / due)
        report(f"sweep, {live:,} live", figures, "us / expired")
        await store.redis.aclose()


def _sweep_with(
    store: SessionStore, lua: LuaScript, due: int, fields: dict[str, str]
) -> Callable[[], Awaitable[float]]:
    """Load `due` sessions (their records with the field names `fields`), let them come
    due, sweep them with `lua` as the sweep script: the Redis CPU seconds of the sweep
    (the loading, the renaming and the waiting left out)."""

    async def sweep() -> float:
        ids = await load(store, due, timedelta(milliseconds=1))
        records = [store.keys.session(session_id).record for session_id in ids]
        await Layout(records, [fields]).apply(store.redis, 0)  # type: ignore[arg-type]
        await wait_overdue(store, due)
        kept = script("sweep")
        script._cache["sweep"] = lua  # the sweep loop calls script("sweep")
        raw: Redis = store.redis  # type: ignore[assignment]
        try:
            before = await redis_cpu(raw)
            done = await sweep_store(store, batch=500, max_sessions=10 * due)
            spent = await redis_cpu(raw) - before
        finally:
            script._cache["sweep"] = kept
        assert done.expired == due, done
        await drop_tombstones(store, ids)
        return spent

    return sweep


async def create_and_end(url: str, revision: str, calls: int, rounds: int) -> None:
    """Redis CPU per ``create`` and per ``end`` (a delete) of this checkout's scripts and
    the revision's: each round creates `calls` new sessions (pipelined, ids drawn over
    the 16 shards, a small state) and then ends them, each way on a key prefix of its
    own (so each index holds only its own layout's entries), alternating."""
    raw: Redis = Redis.from_url(url)
    settings = {way: SessionSettings(key_prefix=f"ce{way}") for way in ("theirs", "ours")}
    lua = {name: (at_revision(revision, name), script(name)) for name in ("create", "end")}
    shas = {
        (name, way): await raw.script_load(found.source)
        for name, ((theirs, _), ours) in lua.items()
        for way, found in (("theirs", theirs), ("ours", ours))
    }
    figures: dict[str, dict[str, list[float]]] = {name: {revision: [], "this": []} for name in lua}
    for _ in range(rounds):
        for way, label in (("theirs", revision), ("ours", "this")):
            cfg = settings[way]
            store = SessionStore(create_client(RedisSettings.from_dsn(url)), cfg)
            ids = [new_session_id(secrets.randbelow(cfg.shards)) for _ in range(calls)]
            spec = [
                round(cfg.idle_timeout.total_seconds() * 1000),
                round(cfg.absolute_lifetime.total_seconds() * 1000),
                round(cfg.sweep_grace.total_seconds() * 1000),
                cfg.events_maxlen,
                "u" + secrets.token_hex(5),
                "",
                "{}",
                "theme",
                '"dark"',
            ]
            ending = ["closed", "deleted", "deleted", 60_000, cfg.events_maxlen]
            for name, args in (("create", spec), ("end", ending)):
                (_, their_keys), ours = lua[name]
                spent = 0.0
                for start in range(0, calls, PIPELINE):
                    pipe = raw.pipeline(transaction=False)
                    for session_id in ids[start : start + PIPELINE]:
                        keys = store.keys.session(session_id).ordered()
                        picked = ours.keys_for(keys)
                        call = (len(picked), *picked, session_id, *args)
                        if way == "theirs":
                            call = renamed(call, key_names(ours), their_keys)
                        pipe.execute_command("EVALSHA", shas[(name, way)], *call)
                    before = await redis_cpu(raw)
                    await pipe.execute()
                    spent += await redis_cpu(raw) - before
                figures[name][label].append(spent * 1e6 / calls)
            await store.redis.aclose()
            pattern = f"{cfg.key_prefix}:*"
            keys = [key async for key in raw.scan_iter(match=pattern, count=1000)]
            for start in range(0, len(keys), 500):
                await raw.delete(*keys[start : start + 500])
    for name, found in figures.items():
        report(name, found, "us per call")
    await raw.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", default="main", help="a git revision")
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--gap", type=float, default=2.0, help="seconds between a spaced replay's requests"
    )
    parser.add_argument("--sweep-live", type=int, nargs="*", default=[], metavar="N")
    parser.add_argument(
        "--one-by-one",
        action="store_true",
        help="each request's round trips one after the other (as at c=1), not pipelined",
    )
    args = parser.parse_args()
    print(f"Redis CPU, medians of {args.rounds} rounds: {args.against} beside this checkout")
    print(f"{'script':36} {args.against:>8} {'this':>8} {'':14} ratio")
    with redis_url() as url:
        asyncio.run(
            hot_scripts(url, args.against, args.calls, args.rounds, args.gap, args.one_by_one)
        )
        asyncio.run(create_and_end(url, args.against, args.calls, args.rounds))
    for live in args.sweep_live:
        asyncio.run(sweeps(args.against, live, args.rounds))


if __name__ == "__main__":
    main()
