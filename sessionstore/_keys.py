"""The only place that builds Redis key names.

Every key starts with the configured prefix (default ``ss``). All keys of one
session, and its shard's expiry index, stats and event stream, carry the hash
tag ``{<shard>}``, so every transition of a session is one Lua script that is
atomic on Redis Cluster too. ``docs/keys.md`` documents each key for operators;
`describe_layout` prints the same table.

Lua scripts never build key names themselves, with two documented exceptions:
the batch scripts (sweep, repair) are handed key *prefixes* built here
(`KeySpace.session_prefixes`) and append session ids read from the expiry index of
the same shard; and the expiry index's helpers in the prelude name its counts hash
and its buckets from its root (`KeySpace.expiry`), in the shapes of
`KeySpace.expiry_counts` and `KeySpace.expiry_bucket`, since a bucket follows from
a deadline that only the script knows.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from functools import lru_cache

from ._ids import check_name, session_shard


@dataclass(frozen=True, slots=True)
class SessionKeys:
    """The keys of one session; all share the shard's hash tag."""

    session_id: str
    shard: int
    #: hash: the session record (fields documented in docs/keys.md)
    record: str
    #: hash: tombstone of an expired, closed or rotated id
    tombstone: str
    #: hash: the session's lock (owner, fence)
    lock: str
    #: hash: upstream connection records, one field (JSON) per upstream name
    upstreams: str
    #: stream: the session's MCP SSE events (sessionstore.mcp), capped, dropped with the session
    mcp_events: str
    #: stream: the events of the session's standalone MCP GET stream, apart so that its
    #: readers do not wake for every request's events
    mcp_standalone: str
    #: the shard's keys
    expiry: str
    stats: str
    events: str

    def ordered(self) -> list[str]:
        """The nine keys in the order every single-session script takes them."""
        return [
            self.record,
            self.tombstone,
            self.lock,
            self.upstreams,
            self.expiry,
            self.stats,
            self.events,
            self.mcp_events,
            self.mcp_standalone,
        ]


@dataclass(frozen=True, slots=True)
class BreakerKeys:
    """The keys of one circuit breaker; all share the tag ``{<name>}``."""

    name: str
    #: hash: state, gen, changed_at, open_until, successes, cause, actor, reason, trips
    state: str
    #: hash: fleet-wide window counters c:<bucket>, f:<bucket>, s:<bucket>
    window: str
    #: sorted set: half-open probe leases, member lease id, score deadline (ms)
    probes: str
    #: stream: transitions and reclaimed probes, capped near events_maxlen
    events: str
    #: stream: manual actions (who, when, why), capped at audit_maxlen
    audit: str

    def ordered(self) -> list[str]:
        """The five keys in the order every breaker script takes them."""
        return [self.state, self.window, self.probes, self.events, self.audit]


#: How many sessions' keys a key space keeps built. Building them takes about 3 us
#: (the id's check and nine names), and the calls of one request (a read, a write, a
#: lease's take and return) all name the same session. Bounded, and least recently used
#: dropped first: ids come from clients, so a cache that kept every well-formed id ever
#: presented would grow without limit (about 1 KB an id); 1024 is far more sessions
#: than one process has requests in flight.
SESSION_KEYS_KEPT = 1024


#: How many hashes the user index is spread over: a user's entry is one field of
#: ``<prefix>:users:{<k>}``, k = CRC-32 of the user id modulo this. Fixed, not a setting:
#: a hash of up to 512 fields of at most 64 B stays listpack-encoded (about 45 B per
#: user of one session), a larger one costs about 82 B per such user, and each hash
#: costs about 80 B of its own. 1024 hashes keep the listpack up to about 400k users,
#: cost 60 B per user at 5000 (docs/performance.md) and spread over any Cluster.
#: Changing it moves every user's entry: the repair job rebuilds the index.
USER_INDEX_HASHES = 1024


def user_index_hash(user_id: str) -> int:
    """Which of the `USER_INDEX_HASHES` hashes holds `user_id`'s entry (stable across
    processes and releases, unlike ``hash()``)."""
    return zlib.crc32(user_id.encode()) % USER_INDEX_HASHES


class KeySpace:
    """Key names for one prefix and shard count.

    .. versionadded:: 0.1
    """

    def __init__(self, prefix: str, shards: int) -> None:
        self.prefix = prefix
        self.shards = shards
        self._built_session_keys = lru_cache(maxsize=SESSION_KEYS_KEPT)(self._session_keys)

    # -- per shard -------------------------------------------------------------

    def shard_tag(self, shard: int) -> str:
        return f"{self.prefix}:{{{shard}}}"

    def expiry(self, shard: int) -> str:
        """Sorted set, the root of the shard's expiry index: the names of its time
        buckets (``<level>:<start>``) scored by their start (ms). The scripts get this
        key as ``expiry`` and name the others from it (docs/keys.md, "The expiry
        index")."""
        return f"{self.shard_tag(shard)}:due"

    def expiry_counts(self, shard: int) -> str:
        """Hash: the entries each time bucket of the shard's expiry index holds."""
        return f"{self.expiry(shard)}:counts"

    def expiry_bucket(self, shard: int, name: str) -> str:
        """Sorted set: one time bucket (`name` ``<level>:<start>``) of the shard's expiry
        index, session ids scored by the deadline (ms) their entry was written at."""
        return f"{self.expiry(shard)}:{name}"

    def legacy_expiry(self, shard: int) -> str:
        """The sorted set development builds kept as the shard's whole expiry index
        (the repair job deletes it, see docs/keys.md)."""
        return f"{self.shard_tag(shard)}:expiry"

    def stats(self, shard: int) -> str:
        """Hash: monotonic counters of the shard (created, expired, closed, ...)."""
        return f"{self.shard_tag(shard)}:stats"

    def events(self, shard: int) -> str:
        """Stream: the shard's session events, capped near `events_maxlen`."""
        return f"{self.shard_tag(shard)}:events"

    def session_prefixes(self, shard: int) -> dict[str, str]:
        """Key prefixes of the shard's per-session keys, for the batch scripts."""
        tag = self.shard_tag(shard)
        return {
            name: f"{tag}:{name}:"
            for name in (
                "session",
                "tomb",
                "lock",
                "upstreams",
                "mcp",
                "mcpget",
            )
        }

    def session_prefix_args(self, shard: int) -> list[str]:
        """The prefixes as the batch scripts (sweep, repair_sessions) take them in ARGV:
        record, tomb, lock, upstreams, mcp events, mcp standalone events."""
        return list(self.session_prefixes(shard).values())

    # -- per session -----------------------------------------------------------

    def session(self, session_id: str) -> SessionKeys:
        """All keys of `session_id` (kept for the `SESSION_KEYS_KEPT` ids used last).

        Raises:
            InvalidSessionId: the id is malformed; nothing reaches Redis.
        """
        if type(session_id) is str:  # anything else (unhashable too) is refused uncached
            return self._built_session_keys(session_id)
        return self._session_keys(session_id)

    def _session_keys(self, session_id: str) -> SessionKeys:
        shard = session_shard(session_id, self.shards)
        tag = self.shard_tag(shard)
        return SessionKeys(
            session_id=session_id,
            shard=shard,
            record=f"{tag}:session:{session_id}",
            tombstone=f"{tag}:tomb:{session_id}",
            lock=f"{tag}:lock:{session_id}",
            upstreams=f"{tag}:upstreams:{session_id}",
            mcp_events=f"{tag}:mcp:{session_id}",
            mcp_standalone=f"{tag}:mcpget:{session_id}",
            expiry=self.expiry(shard),
            stats=self.stats(shard),
            events=self.events(shard),
        )

    # -- not slot-bound --------------------------------------------------------

    def mcp_subscriptions(self) -> str:
        """Stream: the fleet's MCP subscription events (2026-07-28 ``subscriptions/listen``)."""
        return f"{self.prefix}:mcp:subscriptions"

    def user_index(self, user_id: str) -> str:
        """Hash holding `user_id`'s entry: field the user id, value the user's session
        ids separated by spaces, oldest first, while they fit in 64 bytes, else ``*``
        (shared with the users of the same `user_index_hash`).

        Raises:
            InvalidInput: the user id has characters outside the allowed set.
        """
        return self.user_index_at(user_index_hash(check_name(user_id, "user_id")))

    def user_sessions(self, user_id: str) -> str:
        """Sorted set of a user whose ids do not fit in its `user_index` field: its
        session ids scored by the order they came in (in the same slot as that hash).

        Raises:
            InvalidInput: the user id has characters outside the allowed set.
        """
        return self.user_index_keys(user_id)[1]

    def user_index_keys(self, user_id: str) -> list[str]:
        """The two keys of `user_id`'s entry, as the ``user_index`` script takes them:
        `user_index` and `user_sessions` (the user id checked and hashed once).

        Raises:
            InvalidInput: the user id has characters outside the allowed set.
        """
        index = self.user_index(user_id)
        return [index, f"{index}:{user_id}"]

    def user_index_at(self, k: int) -> str:
        """The `k`-th hash of the user index (0 <= k < `USER_INDEX_HASHES`)."""
        return f"{self.prefix}:users:{{{k}}}"

    def global_requests(self) -> str:
        """Sorted set: every request lease in the fleet, for the global limit."""
        return f"{self.prefix}:{{global}}:requests"

    def session_pattern(self, shard: int) -> str:
        """SCAN pattern of the shard's session records (used only by the repair job)."""
        return f"{self.shard_tag(shard)}:session:*"

    # -- upstream breakers (one hash tag per breaker) --------------------------
    # All keys of one breaker share the tag {<name>}, so each transition is one
    # script on one Cluster slot. The index and the channel are fleet-wide.

    def breaker_tag(self, name: str) -> str:
        """``<prefix>:breaker:{<name>}``; the name is checked first.

        Raises:
            InvalidInput: the name has characters outside the allowed set.
        """
        return f"{self.prefix}:breaker:{{{check_name(name, 'breaker name')}}}"

    def breaker(self, name: str) -> BreakerKeys:
        """All keys of breaker `name`.

        Raises:
            InvalidInput: the name has characters outside the allowed set.
        """
        tag = self.breaker_tag(name)
        return BreakerKeys(
            name=name,
            state=f"{tag}:state",
            window=f"{tag}:window",
            probes=f"{tag}:probes",
            events=f"{tag}:events",
            audit=f"{tag}:audit",
        )

    def breaker_index(self) -> str:
        """Sorted set: known breaker names scored by last use (ms); pruned by age."""
        return f"{self.prefix}:breakers"

    def breaker_channel(self) -> str:
        """Pub/sub channel where breaker transitions are announced."""
        return f"{self.prefix}:breaker-transitions"

    # -- upstream connections (branch `upstream`) -----------------------------
    # The records themselves are a per-session key (SessionKeys.upstreams).

    def reconnect_job_id(self, session_id: str, upstream: str) -> str:
        """arq job id of the reconnect job of one upstream connection.

        arq keeps ``arq:job:<this id>`` in the queue's Redis while the job is
        queued or running, so the id makes the job unique fleet-wide. arq logs
        job ids, and a session id is a bearer secret, so the id carries a
        digest of the pair rather than the session id itself.
        """
        self.session(session_id)  # validates the id
        check_name(upstream, "upstream name")
        pair = f"{session_id}\n{upstream}".encode()
        digest = hashlib.blake2b(pair, digest_size=16).hexdigest()
        return f"{self.prefix}:reconnect:{digest}"

    # -- workers ---------------------------------------------------------------

    def worker(self, worker_id: str) -> str:
        """Hash with a TTL: one worker's heartbeat."""
        return f"{self.prefix}:worker:{check_name(worker_id, 'worker id')}"

    def worker_index(self) -> str:
        """Sorted set: worker ids scored by last heartbeat (ms); pruned by age."""
        return f"{self.prefix}:workers"

    # -- worker fleet ------------------------------------------------------------

    def job_queue(self) -> str:
        """Sorted set owned by arq: the worker fleet's job queue (on the queue Redis)."""
        return f"{self.prefix}:queue"


def describe_layout(prefix: str) -> list[dict[str, str]]:
    """The key layout as rows (pattern, type, ttl, what, redis_cli) for docs and the CLI.

    ``docs/keys.md`` holds the same table; a test keeps the two in step.
    """
    p = prefix
    rows = [
        (
            f"{p}:{{N}}:session:<id>",
            "hash",
            "absolute deadline + sweep_grace (set at creation)",
            "session record: plain fields, one a:<name> field per state attribute, "
            "request/connection leases in r/c (one at a time) and r:<lease>/c:<lease> fields",
            f"HGETALL {p}:{{N}}:session:<id>",
        ),
        (
            f"{p}:{{N}}:tomb:<id>",
            "hash",
            "expired_retention",
            "tombstone of an expired/closed/rotated id (status, reason, superseded_by)",
            f"HGETALL {p}:{{N}}:tomb:<id>",
        ),
        (
            f"{p}:{{N}}:lock:<id>",
            "hash",
            "lock_ttl",
            "session lock: owner token, fence",
            f"HGETALL {p}:{{N}}:lock:<id>",
        ),
        (
            f"{p}:{{N}}:upstreams:<id>",
            "hash",
            "absolute deadline + sweep_grace; dropped with the session (its record's `extras`)",
            "upstream connection records, one JSON field per upstream (docs/upstream.md)",
            f"HGETALL {p}:{{N}}:upstreams:<id>",
        ),
        (
            f"{p}:{{N}}:mcp:<id>",
            "stream",
            "~max events, the sessions' absolute_lifetime; "
            "dropped with the session (its record's `extras`)",
            "MCP SSE events of the session (sessionstore.mcp, docs/mcp.md): s stream id, m message",
            f"XREVRANGE {p}:{{N}}:mcp:<id> + - COUNT 10",
        ),
        (
            f"{p}:{{N}}:mcpget:<id>",
            "stream",
            "~max events, the sessions' absolute_lifetime; "
            "dropped with the session (its record's `extras`)",
            "MCP events of the session's standalone GET stream (notifications): m message",
            f"XREVRANGE {p}:{{N}}:mcpget:<id> + - COUNT 10",
        ),
        (
            f"{p}:{{N}}:due",
            "zset",
            "bounded by the buckets of shard N (emptied ones leave)",
            "expiry index of shard N: its time buckets <level>:<start> scored by start ms",
            f"ZRANGE {p}:{{N}}:due 0 9 WITHSCORES",
        ),
        (
            f"{p}:{{N}}:due:counts",
            "hash",
            "bounded by the buckets of shard N (emptied ones leave)",
            "expiry index: entries held per time bucket (field <level>:<start>)",
            f"HGETALL {p}:{{N}}:due:counts",
        ),
        (
            f"{p}:{{N}}:due:<level>:<start>",
            "zset",
            "at most 128 entries (the deepest level: any); dropped when empty",
            "expiry index time bucket: session ids whose entry deadline is in "
            "[start, start + 4^(10-level) ms), scored by that deadline ms (never later "
            "than the record's; slides leave it)",
            f"ZRANGE {p}:{{N}}:due:<level>:<start> 0 -1 WITHSCORES",
        ),
        (
            f"{p}:{{N}}:stats",
            "hash",
            "fixed fields",
            "lifetime counters: created, expired, closed, rotated, resumed; upstream_*",
            f"HGETALL {p}:{{N}}:stats",
        ),
        (
            f"{p}:{{N}}:events",
            "stream",
            "~events_maxlen entries",
            "session events: created, expired, deleted, rotated, resumed",
            f"XREVRANGE {p}:{{N}}:events + - COUNT 10",
        ),
        (
            f"{p}:users:{{<k>}}",
            "hash",
            "none (entries leave with their sessions; the repair job drops strays)",
            f"user index (a hint), {USER_INDEX_HASHES} hashes, k = crc32(user id) mod "
            f"{USER_INDEX_HASHES}: field user id, value its session ids, space-separated",
            f"HGET {p}:users:{{<k>}} <user_id>",
        ),
        (
            f"{p}:users:{{<k>}}:<user_id>",
            "zset",
            "none (emptied with the user's sessions)",
            "the session ids of a user with more than fit its user-index field (value *), "
            "scored by the order they came in",
            f"ZRANGE {p}:users:{{<k>}}:<user_id> 0 -1",
        ),
        (
            f"{p}:{{global}}:requests",
            "zset",
            "longest lease",
            "fleet-wide request leases (with max_requests_global): <id>:<lease>, fleet:<lease>",
            f"ZCARD {p}:{{global}}:requests",
        ),
        (
            f"{p}:mcp:subscriptions",
            "stream",
            "~maxlen entries (RedisSubscriptionBus, default 1000)",
            "MCP subscription events of the fleet (2026-07-28 listen): kind, uri",
            f"XREVRANGE {p}:mcp:subscriptions + - COUNT 10",
        ),
        # -- circuit breakers (docs/breaker.md) --
        (
            f"{p}:breaker:{{<name>}}:state",
            "hash",
            "breaker retention, refreshed by use",
            "breaker state: state, gen, changed_at, open_until, successes, cause, actor, reason",
            f"HGETALL {p}:breaker:{{<name>}}:state",
        ),
        (
            f"{p}:breaker:{{<name>}}:window",
            "hash",
            "breaker window",
            "fleet-wide outcome counters: c:<bucket> calls, f:<bucket> failures, s:<bucket> slow",
            f"HGETALL {p}:breaker:{{<name>}}:window",
        ),
        (
            f"{p}:breaker:{{<name>}}:probes",
            "zset",
            "2 x probe_lease_ttl",
            "half-open probe leases: member lease id, score deadline ms",
            f"ZRANGE {p}:breaker:{{<name>}}:probes 0 -1 WITHSCORES",
        ),
        (
            f"{p}:breaker:{{<name>}}:events",
            "stream",
            "~breaker events_maxlen entries, retention",
            "breaker transitions (from, to, cause, gen, actor, reason) and reclaimed probes",
            f"XREVRANGE {p}:breaker:{{<name>}}:events + - COUNT 10",
        ),
        (
            f"{p}:breaker:{{<name>}}:audit",
            "stream",
            "audit_maxlen entries, retention",
            "manual breaker actions: action, actor, reason, from, to",
            f"XREVRANGE {p}:breaker:{{<name>}}:audit + - COUNT 10",
        ),
        (
            f"{p}:breakers",
            "zset",
            "breaker retention",
            "known breaker names scored by last use ms (pruned by age)",
            f"ZRANGE {p}:breakers 0 -1 WITHSCORES",
        ),
        # -- worker fleet --
        (
            f"{p}:worker:<worker_id>",
            "hash",
            "heartbeat_ttl after the last beat",
            "worker heartbeat: host, pid, started_at, last_beat, jobs_run, last_sweep",
            f"HGETALL {p}:worker:<worker_id>",
        ),
        (
            f"{p}:workers",
            "zset",
            "heartbeat_ttl (entries pruned by age)",
            "worker ids scored by last heartbeat ms",
            f"ZRANGE {p}:workers 0 -1 WITHSCORES",
        ),
    ]
    names = ("pattern", "type", "ttl", "what", "redis_cli")
    return [dict(zip(names, row, strict=True)) for row in rows]
