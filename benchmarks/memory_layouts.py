"""Redis memory per session of the store's layout beside the layouts it could have.

Every figure is ``MEMORY USAGE`` (all samples) of real keys on one Redis, divided
by the number of sessions, so the allocator's size classes are in it. The
store's own layout is written by the store; the alternatives are written with
plain commands holding the same ids, deadlines and user ids, so only the shape
differs:

* the session record as the store writes it (short field names: ``created``,
  ``idle_ms``, ``idle_end``, ``life_end``, ``attrs``, ``attr_bytes``; no
  ``last_activity``: it is always ``idle_end - idle_ms``; no ``version`` while it
  is 1; no ``attrs`` / ``attr_bytes`` while there is no attribute), beside the same
  record as earlier builds wrote it (the long names ``created_at``,
  ``idle_timeout_ms``, ``idle_deadline``, ``absolute_deadline``, ``state_count``,
  ``state_bytes``, and all four stored), for a small state, 10 attributes of 50 B
  and no state, and user ids of 4 to 40 characters;
* the user index: the store's fixed set of hashes (field the user id, value its
  session ids, or ``*`` and a sorted set of the user's own past 64 B), the same
  with each id's deadline beside it, a sorted set per user (earlier builds), one
  compact (listpack) sorted set per bucket of about 64
  users with members ``<user>|<deadline>|<session id>`` read by ZRANGEBYLEX, and
  one sorted set per shard with members ``<user>|<session id>``; at 5000, 100k and
  500k sessions (``--index-sessions``), of users with one session and of users
  with 1 to 4;
* everything the store keeps per session, written by the store: record, user
  index and expiry index, for a small session and one of 10 x 50 B;
* the expiry index: compact time buckets in the store's shape (per shard,
  listpack sorted sets of at most 128 entries, each covering a span of deadlines,
  2^20 ms at the top, quartered level by level: an entry goes to the shallowest
  bucket on its deadline's chain that is not full, with a hash of their counts
  and a sorted set of them by start for the sweep; written here with plain
  commands), the same with spans halved level by level (a chain of 21 buckets
  instead of 11), one sorted set per shard (earlier builds) and one set of session
  ids per shard and minute of deadline; for deadlines spread over 30 minutes and
  for sessions created in a burst (deadlines within one second);
* the keys of a session with a small state while it holds one request lease, and
  after it returned it (with this checkout's package: run the file with another
  revision's package on ``PYTHONPATH`` to compare layouts).

    .venv/bin/python benchmarks/memory_layouts.py [--sessions 5000] [--prefix ss]

The records' key prefix is random unless ``--prefix`` is given (the keys under it
are dropped at the end: give ``ss`` only on a private Redis, as when
``SESSIONSTORE_REDIS_URL`` is unset); a prefix longer than ``ss`` can put the
record's key name in the next size class.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import statistics
from typing import Any

from _common import redis_url
from redis import Redis

from sessionstore import SessionSettings, SessionStore
from sessionstore._keys import USER_INDEX_HASHES, KeySpace
from sessionstore._redis import create_client
from sessionstore.settings import RedisSettings

SHARDS = SessionSettings().shards
SMALL = {"theme": "dark", "n": 1}
LARGE = {f"attr{i}": "x" * 48 for i in range(10)}  # 50 bytes of JSON each
#: What earlier builds stored in every record, with the value of a new one.
#: The most a user's field of the user index holds before its ids get a set of their own.
FIELD_BYTES = 64
EARLIER_BUILDS = {b"version": b"1", b"state_count": b"0", b"state_bytes": b"0"}
#: The long field names of earlier builds, by the short one that replaced them.
LONG_NAMES = {
    b"created": b"created_at",
    b"idle_ms": b"idle_timeout_ms",
    b"idle_end": b"idle_deadline",
    b"life_end": b"absolute_deadline",
    b"attrs": b"state_count",
    b"attr_bytes": b"state_bytes",
}


def _usage(raw: Redis, pattern: str) -> int:
    """Total MEMORY USAGE of the keys matching `pattern`."""
    return sum(
        int(raw.memory_usage(key, samples=0) or 0)
        for key in raw.scan_iter(match=pattern, count=1000)
    )


def _drop(raw: Redis, pattern: str) -> None:
    keys = list(raw.scan_iter(match=pattern, count=1000))
    for start in range(0, len(keys), 500):
        raw.delete(*keys[start : start + 500])


async def _create(
    url: str, prefix: str, count: int, user_chars: int, state: dict[str, object]
) -> None:
    client = create_client(RedisSettings.from_dsn(url))
    store = SessionStore(client, SessionSettings(key_prefix=prefix))
    try:
        for _ in range(count):
            user = ("u" + secrets.token_hex(user_chars))[:user_chars]
            await store.create(user_id=user, state=state)
    finally:
        await client.aclose()


def session_totals(url: str, raw: Redis, count: int, prefix: str | None) -> None:
    """Bytes per session of everything the store keeps for it, as the store writes it:
    record, user index, expiry index (its time buckets, their counts and their root),
    for `count` sessions of their own users (user ids of 12 characters)."""
    print(
        f"\nthe store's keys per session ({count} sessions, each of its own user,"
        " user ids of 12 characters): record + user index + expiry index = total"
    )
    for label, state in (("small", SMALL), ("10 x 50 B", LARGE)):
        at = prefix or "tot" + secrets.token_hex(3)
        asyncio.run(_create(url, at, count, 12, state))
        record = _usage(raw, f"{at}:{{*}}:session:*") / count
        users = _usage(raw, f"{at}:users:*") / count
        expiry = _usage(raw, f"{at}:{{*}}:due*") / count
        found = list(raw.scan_iter(match=f"{at}:{{*}}:due:*:*", count=1000))
        compact = sum(1 for key in found if raw.object("encoding", key) == b"listpack")
        print(
            f"  {label:10} {record:4.0f} + {users:3.0f} + {expiry:3.0f} ="
            f" {record + users + expiry:4.0f} B   ({len(found)} buckets, {compact} listpack)"
        )
        _drop(raw, at + ":*")


def record_sizes(url: str, raw: Redis, count: int, prefix: str | None) -> None:
    """The record hash per session, as earlier builds wrote it and as written."""
    print(
        "session record (hash), bytes per session:"
        " as earlier builds wrote it (long field names, last_activity, version, state totals)"
        " / as written"
    )
    states: tuple[tuple[str, dict[str, object]], ...] = (
        ("small", SMALL),
        ("10 x 50 B", LARGE),
        ("no state", {}),
    )
    for label, state in states:
        saved: list[float] = []
        for user_chars in range(4, 41, 4):
            at = prefix or "lay" + secrets.token_hex(3)
            n = count // 10
            asyncio.run(_create(url, at, n, user_chars, state))
            pattern = f"{at}:{{*}}:session:*"
            written = _usage(raw, pattern) / n
            _rewrite_as_earlier_builds(raw, pattern)
            earlier = _usage(raw, pattern) / n
            saved.append(earlier - written)
            print(f"  {label:10} user id {user_chars:2} chars: {earlier:4.0f} / {written:4.0f} B")
            _drop(raw, at + ":*")
        print(f"  {label:10} mean saving over these user ids: {statistics.mean(saved):.0f} B")


def _rewrite_as_earlier_builds(raw: Redis, pattern: str) -> None:
    """Write each record matching `pattern` again as earlier builds wrote it: with the
    long field names, `last_activity`, `version` and the state totals (a fresh
    listpack, as such a write made)."""
    for key in raw.scan_iter(match=pattern, count=1000):
        fields = {LONG_NAMES.get(name, name): value for name, value in raw.hgetall(key).items()}
        idle = int(fields[b"idle_deadline"]) - int(fields[b"idle_timeout_ms"])
        fields.setdefault(b"last_activity", str(idle).encode())
        for name, value in EARLIER_BUILDS.items():
            fields.setdefault(name, value)
        ttl = raw.pttl(key)
        raw.delete(key)
        raw.hset(key, mapping=fields)  # type: ignore[arg-type]
        raw.pexpire(key, ttl)


async def _lease_each(
    url: str, prefix: str, count: int, raw: Redis, pattern: str
) -> tuple[float, float]:
    """Bytes per session of the keys matching `pattern` with one request lease held
    on each of `count` new sessions, then after each was returned."""
    client = create_client(RedisSettings.from_dsn(url))
    store = SessionStore(client, SessionSettings(key_prefix=prefix))
    try:
        made = [
            await store.create(user_id="u" + secrets.token_hex(4), state=SMALL)
            for _ in range(count)
        ]
        leases = [await store.leases.take(session.id) for session in made]
        held = _usage(raw, pattern) / count
        for lease in leases:
            await store.leases.release(lease)
        returned = _usage(raw, pattern) / count
    finally:
        await client.aclose()
    return held, returned


def lease_sizes(url: str, raw: Redis, count: int) -> None:
    """A small session's keys (record and any lease keys) with a lease held, and after."""
    at = "lease" + secrets.token_hex(3)
    n = count // 10
    held, returned = asyncio.run(_lease_each(url, at, n, raw, f"{at}:{{*}}:*:*"))
    print("\nsession keys (record and lease keys), small state, bytes per session")
    print(f"  one request lease held:  {held:4.0f} B")
    print(f"  after it was returned:   {returned:4.0f} B")
    _drop(raw, at + ":*")


#: Compact time buckets as the store keeps them (the prelude's INDEX_SHAPE): the top
#: span of deadlines, the split of a span from one level to the next, the deepest
#: level, the entries a bucket holds at most (zset-max-listpack-entries).
TOP_MS, SPLIT, LEVELS, FULL = 1 << 20, 4, 10, 128


def _time_buckets(
    pipe: Any,
    prefix: str,
    entries: list[tuple[int, str, int]],
    split: int = SPLIT,
    levels: int = LEVELS,
) -> None:
    """Write `entries` (shard, session id, deadline) into compact time buckets (by
    default in the store's shape; `split` 2 and `levels` 20: halves, a chain of 21)."""
    counts: dict[tuple[int, str], int] = {}
    for shard, session_id, deadline in entries:
        for level in range(levels + 1):
            width = TOP_MS // split**level
            bucket = f"{deadline - deadline % width}/{level}"
            if counts.get((shard, bucket), 0) < FULL or level == levels:
                break
        counts[(shard, bucket)] = counts.get((shard, bucket), 0) + 1
        pipe.zadd(f"{prefix}:{{{shard}}}:tb:{bucket}", {session_id: deadline})
    for (shard, bucket), n in counts.items():
        pipe.hset(f"{prefix}:{{{shard}}}:tb", bucket, n)
        pipe.zadd(f"{prefix}:{{{shard}}}:tborder", {bucket: int(bucket.split("/")[0])})


def index_sizes(raw: Redis, count: int, per_user: tuple[int, int] = (1, 1)) -> None:
    """User and expiry index layouts holding `count` sessions, of users with between
    `per_user[0]` and `per_user[1]` sessions each."""
    prefix = "idx" + secrets.token_hex(3)
    space = KeySpace(prefix, SHARDS)
    now = 1_800_000_000_000
    sessions = []
    while len(sessions) < count:
        user = "user" + secrets.token_hex(4)
        for _ in range(min(random.randint(*per_user), count - len(sessions))):
            shard = len(sessions) % SHARDS
            session_id = f"{shard}.{secrets.token_urlsafe(18)}"
            sessions.append((shard, session_id, user, now + secrets.randbelow(1_800_000)))
    buckets = max(1, count // 64)
    pipe = raw.pipeline(transaction=False)
    for shard, session_id, user, deadline in sessions:
        pipe.zadd(f"{prefix}:peruser:{user}", {session_id: deadline + 86_400_000})
        bucket = int.from_bytes(user.encode()[-4:], "big") % buckets
        pipe.zadd(f"{prefix}:bucket:{{{bucket}}}", {f"{user}|{deadline}|{session_id}": 0})
        pipe.zadd(f"{prefix}:{{{shard}}}:users", {f"{user}|{session_id}": deadline})
        pipe.zadd(f"{prefix}:{{{shard}}}:expiry", {session_id: deadline})
        minute = deadline // 60_000
        pipe.sadd(f"{prefix}:{{{shard}}}:minute:{minute}", session_id)
    spread = [(s, i, d) for s, i, _, d in sessions]
    _time_buckets(pipe, prefix + "spread", spread)
    burst = [(s, i, now + n * 1000 // count) for n, (s, i, _, _) in enumerate(sessions)]
    _time_buckets(pipe, prefix + "burst", burst)
    _time_buckets(pipe, prefix + "halfspread", spread, split=2, levels=20)
    _time_buckets(pipe, prefix + "halfburst", burst, split=2, levels=20)
    pipe.execute()
    _write_user_hashes(raw, space, sessions, with_deadlines=False)
    _write_user_hashes(raw, KeySpace(prefix + "dl", SHARDS), sessions, with_deadlines=True)
    hashes = f"{USER_INDEX_HASHES} hashes"
    rows = [
        (f"user index, the store's: {hashes} (and a set per user of 3+)", f"{prefix}:users:*"),
        ("user index, the same with each id's deadline (base 36)", f"{prefix}dl:users:*"),
        ("user index, a sorted set per user (earlier builds)", f"{prefix}:peruser:*"),
        (f"user index, a listpack sorted set per bucket ({buckets} buckets)", f"{prefix}:bucket:*"),
        ("user index, a sorted set per shard", f"{prefix}:{{*}}:users"),
        ("expiry index, a sorted set per shard (earlier builds)", f"{prefix}:{{*}}:expiry"),
        ("expiry index, a set per shard and minute", f"{prefix}:{{*}}:minute:*"),
        (
            "expiry index, time buckets (the store's shape), deadlines over 30 min",
            f"{prefix}spread:*",
        ),
        ("expiry index, time buckets (the store's shape), a burst's (1 s)", f"{prefix}burst:*"),
        ("expiry index, time buckets of halving spans, over 30 min", f"{prefix}halfspread:*"),
        ("expiry index, time buckets of halving spans, a burst's (1 s)", f"{prefix}halfburst:*"),
    ]
    users = len({user for _, _, user, _ in sessions})
    print(
        f"\nindexes, bytes per session ({count} sessions of {users} users with"
        f" {per_user[0]}-{per_user[1]} each, {SHARDS} shards)"
    )
    for label, pattern in rows:
        found = list(raw.scan_iter(match=pattern, count=1000))
        compact = sum(1 for key in found if raw.object("encoding", key) in (b"listpack",))
        print(
            f"  {label:66} {_usage(raw, pattern) / count:6.1f} B"
            f"   ({len(found)} keys, {compact} listpack)"
        )
    _drop(raw, prefix + "*")


def _write_user_hashes(
    raw: Redis, space: KeySpace, sessions: list[tuple[int, str, str, int]], *, with_deadlines: bool
) -> None:
    """The user index as the store writes it (ids of a user oldest first, space-separated),
    or with each id's absolute deadline beside it, to see what pruning by time would cost."""
    values: dict[str, list[str]] = {}
    for _, session_id, user, deadline in sessions:
        entry = f"{session_id}:{_base36(deadline)}" if with_deadlines else session_id
        values.setdefault(user, []).append(entry)
    pipe = raw.pipeline(transaction=False)
    for user, ids in values.items():
        field = " ".join(ids)
        if len(field) <= FIELD_BYTES:
            pipe.hset(space.user_index(user), user, field)
        else:  # as user_index.lua keeps a user with more: '*', and a sorted set of its own
            pipe.hset(space.user_index(user), user, "*")
            pipe.zadd(space.user_sessions(user), {i: n for n, i in enumerate(ids, 1)})
    pipe.execute()


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while number:
        number, digit = divmod(number, 36)
        out = digits[digit] + out
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=5000)
    parser.add_argument("--prefix", help="the records' key prefix (default: a random one)")
    parser.add_argument(
        "--index-sessions",
        type=int,
        nargs="+",
        default=[5000, 100_000, 500_000],
        help="sessions for the index layouts (each also with users of 1-4 sessions)",
    )
    args = parser.parse_args()
    with redis_url() as url:
        raw = Redis.from_url(url)
        print(f"redis: {url}   {raw.info('server')['redis_version']}")
        session_totals(url, raw, args.sessions, args.prefix)
        record_sizes(url, raw, args.sessions, args.prefix)
        for count in args.index_sessions:
            index_sizes(raw, count)
            index_sizes(raw, count, per_user=(1, 4))
        lease_sizes(url, raw, args.sessions)
        raw.close()


if __name__ == "__main__":
    main()
