"""`SessionStore`: sessions in Redis, one atomic script per transition.

Hot-path calls (create, get, touch, state writes) are one round trip each.
Request leases live in ``_leases.py``, locks in ``_lock.py``, resume and
rotate in ``_successors.py``, the user index in ``_users.py``, counts in
``_counts.py`` and the sweep in ``_sweep.py``; each takes the store's
`StoreContext` (client, key space, settings), never the store itself.
"""

from __future__ import annotations

import asyncio
import inspect
import random
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from .._ids import check_attribute, check_name, new_session_id
from .._keys import KeySpace, SessionKeys
from .._redis import RedisClient
from .._scripts import Arg, Batch, call, load_all
from .._time import ms_to_datetime, to_ms
from ..exceptions import (
    InvalidInput,
    PayloadTooLarge,
    SessionExpired,
    SessionNotFound,
    SessionStoreError,
    StaleFence,
    VersionConflict,
)
from ..settings import SessionSettings
from . import _counts, _successors, _sweep, _users
from ._context import StoreContext
from ._leases import LeaseTracker, TrackedFleetLease, TrackedLease
from ._lock import SessionLock
from ._lua import script
from ._models import Session, SessionCounts, SessionStatus, SweepResult, Tombstone
from ._payload import encode_json, encode_metadata, encode_state
from ._read import read_session
from ._replies import gone_error, raise_refusal

#: The longest idle timeout or lifetime a session may be given: longer is almost
#: certainly a unit mistake, and it keeps every deadline far inside what
#: datetimes and Redis scores hold.
MAX_SESSION_TTL = timedelta(days=366)


def check_ttl(value: object, default: timedelta, name: str) -> timedelta:
    """`value` as a session TTL override, or `default` when it is None.

    Strictly typed: only a `timedelta` of at least a millisecond and at most
    `MAX_SESSION_TTL` is taken (no numbers, strings or booleans).

    Raises:
        InvalidInput: anything else; nothing has been written.

    .. versionadded:: 0.1
    """
    if value is None:
        return default
    if not isinstance(value, timedelta):
        raise InvalidInput(f"{name} must be a timedelta, not {type(value).__name__}")
    if not timedelta(milliseconds=1) <= value <= MAX_SESSION_TTL:
        days = MAX_SESSION_TTL.days
        raise InvalidInput(f"{name} must be between 1 ms and {days} days")
    return value


#: A `mutate` callback: gets a copy of the state, returns the new state (or
#: None after changing the copy in place). May be async.
Mutator = Callable[[dict[str, Any]], "dict[str, Any] | Awaitable[dict[str, Any] | None] | None"]


class SessionStore:
    """Sessions shared by every replica, kept in Redis.

    The store does not own its client: whoever made the client closes it.

    Args:
        redis: an async client from `sessionstore.create_client` (``decode_responses``).
        settings: lifetimes, limits and the key prefix.

    .. versionadded:: 0.1
    """

    def __init__(self, redis: RedisClient, settings: SessionSettings | None = None) -> None:
        self.context = StoreContext.of(redis, settings or SessionSettings())
        self.leases = LeaseTracker(self.context)

    @property
    def redis(self) -> RedisClient:
        """The client this store talks to (not owned: whoever made it closes it)."""
        return self.context.redis

    @property
    def settings(self) -> SessionSettings:
        """Lifetimes, limits and the key prefix."""
        return self.context.settings

    @property
    def keys(self) -> KeySpace:
        """The store's key space (the only builder of its key names)."""
        return self.context.keys

    async def load_scripts(self) -> int:
        """Load every Lua script into Redis now (call once at start-up); returns how many.

        Without it each script's first call costs an extra round trip (NOSCRIPT,
        then EVAL).
        """
        return await load_all(self.redis)

    # -- reading ---------------------------------------------------------------

    async def get(self, session_id: str) -> Session:
        """The active session `session_id`, without side effects (no touch).

        Raises:
            InvalidSessionId: malformed id; Redis is not asked.
            SessionExpired / SessionClosed / SessionRotated: the id has ended
                (never with the successor's id: see `lookup`).
            SessionNotFound: never issued, or its tombstone has lapsed.
            BackendUnavailable: Redis did not answer.
        """
        found = await self.lookup(session_id)
        if isinstance(found, Tombstone):
            raise gone_error(session_id, found.status.value)
        if found.status is SessionStatus.EXPIRED:
            raise SessionExpired(session_id)
        return found

    async def lookup(self, session_id: str, *, with_successor: bool = False) -> Session | Tombstone:
        """The session, or the tombstone of an ended id, for operators and APIs.

        A session past its deadline that the sweeper has not reached yet comes
        back with status ``expired``. A tombstone's ``superseded_by`` (the id
        that rotate or resume issued) is filled only with `with_successor`:
        that is an operator's read, never an answer to whoever holds the old id.

        Raises:
            SessionNotFound: no session and no tombstone.
        """
        found = await read_session(self.redis, self.keys.session(session_id), session_id)
        if found is None:
            raise SessionNotFound(session_id)
        if isinstance(found, Tombstone) and not with_successor:
            return found.model_copy(update={"superseded_by": None})
        return found

    async def list_for_user(self, user_id: str, *, limit: int = 100) -> list[Session]:
        """The user's active sessions (up to `limit`), oldest deadline first.

        The user index is only a hint: every id in it is read back, and ids of
        ended sessions are dropped from the index as they are found; `limit`
        counts live sessions (``limit=0`` returns none). The index keeps a
        user's ids in creation order (a rotated id keeps its place, a resumed
        one goes last) and the first `limit` live ones are returned, ordered by
        deadline: the oldest deadlines whenever the sessions share a lifetime.

        Raises:
            InvalidInput: `limit` is not a non-negative integer.
        """
        return await _users.list_sessions(self.context, user_id, limit=limit)

    # -- creating --------------------------------------------------------------

    async def create(
        self,
        *,
        user_id: str | None = None,
        conversation_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        state: Mapping[str, Any] | None = None,
        idle_timeout: timedelta | None = None,
        absolute_lifetime: timedelta | None = None,
        session_id: str | None = None,
    ) -> Session:
        """Create a session; one round trip (with the user index update pipelined).

        Args:
            user_id: owner, indexed for `list_for_user`.
            conversation_id: the application's conversation, carried over on resume.
            metadata: small JSON object, replaced as a whole.
            state: initial per-attribute state.
            idle_timeout: overrides the setting for this session.
            absolute_lifetime: overrides the setting for this session.
            session_id: the id to create, drawn by the caller with `new_session_id`
                (for a caller that must hand the id out before the session exists);
                an id in use, or one that ever was, is refused.

        Raises:
            InvalidInput / PayloadTooLarge: bad or oversized input; nothing written.
            SessionStoreError: `session_id` is taken.
        """
        cfg = self.settings
        user = check_name(user_id, "user_id") if user_id is not None else ""
        conversation = (
            check_name(conversation_id, "conversation_id") if conversation_id is not None else ""
        )
        idle_ms = to_ms(check_ttl(idle_timeout, cfg.idle_timeout, "idle_timeout"))
        lifetime_ms = to_ms(
            check_ttl(absolute_lifetime, cfg.absolute_lifetime, "absolute_lifetime")
        )
        args: list[Arg] = [
            idle_ms,
            lifetime_ms,
            to_ms(cfg.sweep_grace),
            cfg.events_maxlen,
            user,
            conversation,
            encode_metadata(metadata, cfg),
            *encode_state(state, cfg),
        ]
        given = session_id
        for _ in range(1 if given else 3):  # a collision of 144 random bits is a cosmic accident
            session_id = given or new_session_id(secrets.randbelow(cfg.shards))
            keys = self.keys.session(session_id)
            batch = Batch(self.redis)
            batch.script(script("create"), keys.ordered(), [session_id, *args])
            if user:
                _users.queue_add(self.context, batch, user, session_id)
            reply = (await batch.execute())[0]
            if reply[0] == "ok":
                now = ms_to_datetime(reply[1])
                return self._new_session(
                    session_id, now, user, conversation, metadata, state, idle_ms, lifetime_ms
                )
        raise SessionStoreError(
            "session id taken" if given else "could not draw an unused session id"
        )

    @staticmethod
    def _new_session(
        session_id: str,
        now: datetime,
        user: str,
        conversation: str,
        metadata: Mapping[str, Any] | None,
        state: Mapping[str, Any] | None,
        idle_ms: int,
        lifetime_ms: int,
    ) -> Session:
        idle = timedelta(milliseconds=idle_ms)
        return Session(
            id=session_id,
            status=SessionStatus.ACTIVE,
            user_id=user or None,
            conversation_id=conversation or None,
            created_at=now,
            last_activity=now,
            idle_timeout=idle,
            idle_deadline=now + idle,
            absolute_deadline=now + timedelta(milliseconds=lifetime_ms),
            metadata=dict(metadata or {}),
            state=dict(state or {}),
            version=1,
            fence=0,
            connection_count=0,
            active_requests=0,
        )

    # -- activity and state ----------------------------------------------------

    async def touch(self, session_id: str) -> datetime:
        """Slide the idle deadline; returns the new one. One round trip.

        Raises:
            SessionGone / SessionNotFound: the session cannot be used.
        """
        keys = self.keys.session(session_id)
        reply = await call(self.redis, script("touch"), keys.ordered(), [])
        if isinstance(reply, list):
            raise_refusal(session_id, reply)
        return ms_to_datetime(reply)

    async def set_state(
        self,
        session_id: str,
        values: Mapping[str, Any] | None = None,
        *,
        delete: Iterable[str] = (),
        metadata: Mapping[str, Any] | None = None,
        expected_version: int | None = None,
        fence: int | None = None,
    ) -> int:
        """Set and delete state attributes in one atomic write; returns the new version.

        Only the named attributes are written; the others are not rewritten.

        Args:
            values: attributes to set (JSON values).
            delete: attribute names to remove.
            metadata: replaces the metadata object when given.
            expected_version: compare-and-set: write only if the version matches.
            fence: a lock fence; the write is refused if a newer fence was granted.

        Raises:
            VersionConflict: `expected_version` did not match.
            StaleFence: `fence` is older than the newest granted.
            PayloadTooLarge: the session would exceed its state limits.
            InvalidInput: bad names or values; nothing written.
            SessionGone / SessionNotFound: the session cannot be used.
        """
        cfg = self.settings
        if isinstance(delete, str):
            raise InvalidInput("delete must be a collection of attribute names, not one string")
        # A name given twice is deleted once (the script counts each name it is given).
        deletes = list(dict.fromkeys(check_attribute(name) for name in delete))
        sets = encode_state(values, cfg, deleting=deletes)
        meta = encode_metadata(metadata, cfg) if metadata is not None else ""
        for name, number in (("expected_version", expected_version), ("fence", fence)):
            if number is not None and (not isinstance(number, int) or number < 0):
                raise InvalidInput(f"{name} must be a non-negative integer")
        keys = self.keys.session(session_id)
        # The options go last, each left out with those after it when not given.
        options: list[Arg] = [
            "" if expected_version is None else expected_version,
            "" if fence is None else fence,
            meta,
        ]
        while options and options[-1] == "":
            options.pop()
        args: list[Arg] = [
            cfg.max_state_bytes,
            cfg.max_attributes,
            len(sets) // 2,
            len(deletes),
            *sets,
            *deletes,
            *options,
        ]
        reply = await call(self.redis, script("write_state"), keys.ordered(), args)
        if not isinstance(reply, list):
            return int(reply)  # the new version
        kind = reply[0]
        if kind == "version":
            raise VersionConflict(session_id, expected_version or 0, int(reply[1]))
        if kind == "fence":
            raise StaleFence(session_id, fence or 0, int(reply[1]))
        if kind == "too_large":
            raise PayloadTooLarge("state size in bytes", int(reply[1]), cfg.max_state_bytes)
        if kind == "too_many":
            raise PayloadTooLarge("attribute count", int(reply[1]), cfg.max_attributes)
        raise_refusal(session_id, reply)

    async def mutate(self, session_id: str, fn: Mutator, *, fence: int | None = None) -> Session:
        """Read-modify-write the state with compare-and-set, retrying on conflict.

        `fn` gets a copy of the state and returns the new state (or changes the
        copy and returns None). It may run several times, so keep it free of
        side effects. Only changed attributes are written.

        Raises:
            VersionConflict: still conflicting after `mutate_max_attempts` tries.
        """
        attempts = self.settings.mutate_max_attempts
        for attempt in range(attempts):
            session = await self.get(session_id)
            working = dict(session.state)
            result = fn(working)
            if inspect.isawaitable(result):
                result = await result
            new_state = working if result is None else dict(result)
            sets = {
                k: v
                for k, v in new_state.items()
                if k not in session.state or encode_json(session.state[k], k) != encode_json(v, k)
            }
            deletes = [k for k in session.state if k not in new_state]
            if not sets and not deletes:
                return session
            try:
                version = await self.set_state(
                    session_id, sets, delete=deletes, expected_version=session.version, fence=fence
                )
            except VersionConflict:
                if attempt == attempts - 1:
                    raise
                # Spread colliding writers apart: full jitter, growing to 50 ms.
                await asyncio.sleep(random.uniform(0, min(0.05, 0.001 * 2**attempt)))
                continue
            return session.model_copy(update={"state": new_state, "version": version})
        raise AssertionError("unreachable")  # pragma: no cover

    # -- ending, resuming, rotating ------------------------------------------------

    async def delete(self, session_id: str) -> bool:
        """Close the session; its id answers ``closed`` for the retention period.

        Returns:
            True if a live session was closed, False if the id had already ended.

        Raises:
            SessionNotFound: no session and no tombstone.
        """
        return await self._end(session_id, "closed", "deleted", "deleted")

    async def expire(self, session_id: str) -> bool:
        """Expire the session now (as the sweeper would); it can then be resumed.

        Returns:
            True if a live session was expired, False if the id had already ended.
        """
        return await self._end(session_id, "expired", "expired", "manual")

    async def _end(self, session_id: str, status: str, event: str, reason: str) -> bool:
        keys = self.keys.session(session_id)
        args: list[Arg] = [
            session_id,
            status,
            event,
            reason,
            to_ms(self.settings.expired_retention),
            self.settings.events_maxlen,
        ]
        reply = await call(self.redis, script("end"), keys.ordered(), args)
        if reply[0] == "ok":
            if len(reply) > 1 and reply[1]:
                await _users.remove(self.context, str(reply[1]), session_id)
            return True
        if reply[0] == "gone":
            return False
        raise_refusal(session_id, reply)

    async def resume(self, session_id: str) -> Session:
        """Continue after a disconnect: the same session if active, else a successor.

        An active session is touched and returned (one round trip). An expired
        one gets a new session in the same shard, linked both ways (the old id's
        ``superseded_by``, the new session's ``resumed_from``). Carried over:
        ``user_id``, ``conversation_id`` and ``metadata``; attribute state is
        not, because it expired with the session. Resuming the same expired id
        again returns the successor rather than a second new session.

        Raises:
            SessionClosed / SessionRotated: such ids are never resumed.
            SessionNotFound: unknown, or the tombstone has lapsed.
        """
        return await _successors.resume(self.context, session_id)

    async def rotate(self, session_id: str) -> Session:
        """Give the session a new id (session-fixation defence); returns it.

        Data, leases, lock and upstream records move to the new id; the old id
        answers ``rotated`` with ``superseded_by`` for the retention period.
        """
        new_id = await _successors.rotate(self.context, session_id)
        return await self.get(new_id)

    def session_keys(self, session_id: str) -> SessionKeys:
        """The Redis keys of `session_id` (validates the id)."""
        return self.keys.session(session_id)

    # -- leases, locks, shard-wide -------------------------------------------------

    def track_request(self, session_id: str, *, read_session: bool = False) -> TrackedLease:
        """``async with store.track_request(sid) as lease:`` holds a request lease.

        Taking and returning the lease are one round trip each; the lease is
        renewed in the background while the body runs. With `read_session`,
        ``lease.session`` is the session, read in the same round trip, and
        ``lease.draft`` its state to change: the changes are committed with the
        lease's return (same round trip, compare-and-set on the version read), so
        a request that reads, changes and leases costs two round trips in all.

        Raises:
            SessionLimitExceeded / GlobalLimitExceeded: at a concurrency limit.
            SessionGone / SessionNotFound: the session cannot be used.
            VersionConflict: (on exit) the session changed while the draft was open;
                the draft's changes were not written.
        """
        return self.leases.track(session_id, "requests", read_session=read_session)

    def track_connection(self, session_id: str, *, read_session: bool = False) -> TrackedLease:
        """Like `track_request` for long-lived connections (counted, not limited)."""
        return self.leases.track(session_id, "conns", read_session=read_session)

    def track_fleet_request(self) -> TrackedFleetLease:
        """``async with store.track_fleet_request():`` holds a fleet-wide request lease for
        a request that belongs to no session (an MCP request of the 2026-07-28 revision).

        It counts against `max_requests_global` with every session's requests; taking
        and returning it are one round trip each, and none without a global limit.

        Raises:
            GlobalLimitExceeded: at the global limit.
        """
        return TrackedFleetLease(self.leases)

    def lock(
        self, session_id: str, *, ttl: timedelta | None = None, owner: str | None = None
    ) -> SessionLock:
        """A leased lock with a fencing number on `session_id`; see `SessionLock`."""
        return SessionLock(self, session_id, ttl=ttl, owner=owner)

    async def counts(self) -> SessionCounts:
        """Active, overdue and lifetime counts in O(shards); see `SessionCounts`."""
        return await _counts.counts(self.context)

    async def sweep_shard(
        self, shard: int, *, batch: int = 500, min_overdue: timedelta = timedelta(0)
    ) -> SweepResult:
        """Expire up to `batch` due sessions of `shard`; see `sweep_shard`."""
        return await _sweep.sweep_shard(self.context, shard, batch=batch, min_overdue=min_overdue)
