"""Request and connection tracking as leases with deadlines.

A lease is in the session record with its deadline, so it goes wherever the
record goes: a kind's first lease in its slot (``r`` for a request, ``c`` for a
connection, ``"<lease id> <deadline>"``), emptied by its return; one taken while
the slot's is live in a field of its own (``r:<lease id>``, ``c:<lease id>``).
Taking one reclaims lapsed leases first, so a crashed replica's requests stop
counting after `request_lease_ttl`. A holder
renews its lease in the background while it runs. With a global limit, the
fleet-wide lease is taken in the same round trip (pipelined); if one of the
two is refused the other is given back, so limits are never exceeded, though
a refused request may briefly hold a slot.

A lease held across a rotate moves with the session: its next renewal or its
return finds the new id (`follow_rotation`, with the lease id as proof) and
acts there, so the holder's next request is not refused for its own lease.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

from .._ids import short_id
from .._scripts import Arg, Batch, BatchCall, call
from .._time import to_ms
from ..exceptions import (
    GlobalLimitExceeded,
    LockNotOwned,
    PayloadTooLarge,
    SessionGone,
    SessionLimitExceeded,
    SessionNotFound,
    SessionStoreError,
    VersionConflict,
)
from ._context import StoreContext
from ._draft import SessionDraft
from ._lua import script
from ._models import Session, Tombstone
from ._read import read_session
from ._replies import gone_error, raise_refusal
from ._successors import follow_rotation

logger = logging.getLogger("sessionstore.requests")

LeaseKind = Literal["requests", "conns"]
#: How the fleet-wide set names the leases of requests that belong to no session
#: (``fleet:<lease id>``; a session's are ``<session id>:<lease id>``).
FLEET_MEMBER = "fleet"


@dataclass
class Lease:
    """One held request or connection lease.

    .. versionadded:: 0.1
    """

    #: The session the lease is on (follows the session when it is rotated).
    session_id: str
    lease_id: str
    kind: LeaseKind
    #: Live leases of this kind on the session when this one was taken.
    live: int
    #: True when a fleet-wide lease was taken as well.
    global_lease: bool = False
    #: The session as read in the same round trip (only with ``read_session``).
    session: Session | None = None
    #: The session's state to change during the request (only with ``read_session``):
    #: its changes are committed with the lease's return, in the same round trip.
    draft: SessionDraft | None = None
    _renewer: Renewal | None = field(default=None, repr=False)
    #: The lease's member in the fleet-wide set (named after the id it was taken on).
    global_member: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.global_member = f"{self.session_id}:{self.lease_id}"


class LeaseTracker:
    """Takes, renews and returns leases for one store.

    Reached through the store: ``async with store.track_request(session_id) as lease:``
    (or `SessionStore.track_connection`), which use `track`.
    """

    def __init__(self, context: StoreContext) -> None:
        self.context = context
        cfg = context.settings
        self.lease_seconds = cfg.request_lease_ttl.total_seconds()
        self.lease_ms = to_ms(cfg.request_lease_ttl)

    def _limit(self, kind: LeaseKind) -> int:
        return self.context.settings.max_requests_per_session if kind == "requests" else 0

    def _uses_global(self, kind: LeaseKind) -> bool:
        return kind == "requests" and self.context.settings.max_requests_global > 0

    async def take(
        self, session_id: str, kind: LeaseKind = "requests", *, read_session: bool = False
    ) -> Lease:
        """Take a lease: one round trip (two pipelined scripts with a global limit).

        With `read_session`, the same reply carries the session (``lease.session``),
        as it stands with this lease counted and the idle deadline slid.

        Raises:
            SessionLimitExceeded: the session is at `max_requests_per_session`.
            GlobalLimitExceeded: the fleet is at `max_requests_global`.
            SessionGone / SessionNotFound: the session cannot be used.
        """
        keys = self.context.keys.session(session_id)
        lease = Lease(session_id, secrets.token_hex(8), kind, live=0)
        lease.global_lease = self._uses_global(kind)
        lease_ms = self.lease_ms
        batch = Batch(self.context.redis)
        mode = "read" if read_session else "take"
        args: list[Arg] = [kind, lease.lease_id, lease_ms, self._limit(kind), mode]
        batch.script(script("lease"), keys.ordered(), args)
        if lease.global_lease:
            limit = self.context.settings.max_requests_global
            batch.script(
                script("global_lease"),
                [self.context.keys.global_requests()],
                ["take", lease.global_member, lease_ms, limit],
            )
        # The session is read by a plain command after the script (see `_read`): if
        # the script refused, its reply is not looked at.
        record_at = batch.command("HGETALL", keys.record, reread=True) if read_session else -1
        replies = await batch.execute()
        # A take's success is a number: the live leases, or with the read the clock.
        local = replies[0]
        taken = not isinstance(local, list)
        global_ok = not lease.global_lease or replies[1][0] == "ok"
        if taken and global_ok:
            if read_session:
                await self._read_taken(lease, int(local), replies[record_at])
            else:
                lease.live = int(local)
            return lease
        # Give back whichever half was granted, then say why.
        if taken:
            lease.global_lease = False
            await self.release(lease)
            raise GlobalLimitExceeded(self.context.settings.max_requests_global)
        if lease.global_lease and global_ok:
            await self.release_fleet(lease.global_member)
        if local[0] == "limit":
            raise SessionLimitExceeded(session_id, self._limit(kind))
        raise_refusal(session_id, local)

    async def _read_taken(self, lease: Lease, now_ms: int, record: dict[str, str]) -> None:
        """Fill in ``lease.session``, ``lease.draft`` and ``lease.live`` from the record
        read beside the take (`now_ms`: Redis' clock at the take, the script's reply).

        The read is not atomic with the take: in between, the session may have been
        ended or rotated away (the record is not there). Then the lease is given back
        (after a rotate it went with the record; the return follows it) and the take
        fails as it would have a moment later.

        Raises:
            SessionGone / SessionNotFound: the session ended right after the take.
        """
        if not record:
            session_id = lease.session_id
            await self.release(lease)
            found = await read_session(
                self.context.redis, self.context.keys.session(session_id), session_id
            )
            if isinstance(found, Tombstone):
                raise gone_error(session_id, found.status)
            raise SessionNotFound(session_id)
        session = lease.session = Session.from_record(lease.session_id, record, now_ms=now_ms)
        # The record holds this lease (read after the take), counted with the others.
        live = session.active_requests if lease.kind == "requests" else session.connection_count
        lease.live = live
        # The record's own JSON of each attribute: what a change is compared with.
        stored = {name[2:]: text for name, text in record.items() if name[:2] == "a:"}
        lease.draft = SessionDraft(
            session.state, session.version, self.context.settings, stored=stored
        )

    async def renew(self, lease: Lease) -> None:
        """Push the lease's deadline out by another lease period.

        Raises:
            LockNotOwned: the lease lapsed and was reclaimed.
            SessionGone / SessionNotFound: the session ended meanwhile.
        """
        reply = await self._renew(lease)
        if reply[0] == "gone" and await self._follow(lease):
            reply = await self._renew(lease)
        if reply[0] == "lost":
            raise LockNotOwned(f"lease {lease.lease_id}", "lapsed and was reclaimed")
        if reply[0] != "ok":
            raise_refusal(lease.session_id, reply)

    async def _follow(self, lease: Lease) -> bool:
        """Move `lease` to the id its session was rotated to, if it went along."""
        new_id = await follow_rotation(self.context, lease.session_id, lease.kind, lease.lease_id)
        if new_id is None:
            return False
        lease.session_id = new_id
        return True

    async def _renew(self, lease: Lease) -> list[Any]:
        keys = self.context.keys.session(lease.session_id)
        lease_ms = self.lease_ms
        batch = Batch(self.context.redis)
        args: list[Arg] = [lease.kind, lease.lease_id, lease_ms, 0, "renew"]
        batch.script(script("lease"), keys.ordered(), args)
        if lease.global_lease:
            batch.script(
                script("global_lease"),
                [self.context.keys.global_requests()],
                ["renew", lease.global_member, lease_ms, 0],
            )
        reply: list[Any] = (await batch.execute())[0]
        return reply

    async def release(
        self, lease: Lease, *, commit: bool = False, riders: Sequence[BatchCall] = ()
    ) -> None:
        """Return the lease: one round trip. Returning it twice is harmless.

        `riders` are commands sent in the same round trip (written once, even when
        the return has to follow a rotation); their replies are not looked at.

        A lease that was not on its id any more (the session was rotated) is
        followed to the new id and returned there: one more round trip.

        With `commit`, the changes staged in ``lease.draft`` are written in the same
        script, if the session's version is still the one the lease read; the lease
        is returned either way, and the draft is closed.

        Raises:
            VersionConflict: (commit) the session changed since the lease read it.
            PayloadTooLarge: (commit) the changes would exceed the state limits.
            SessionGone / SessionNotFound: (commit) the session ended meanwhile.
        """
        draft = lease.draft
        changes = None
        if draft is not None:
            draft.close()
            if commit and draft.changed:
                changes = draft.changes()
        reply = await self._release(lease, changes, riders=riders)
        if not _returned(reply, committing=changes is not None) and await self._follow(lease):
            reply = await self._release(lease, changes, global_too=False)
        if changes is not None:
            self._committed(lease, reply)

    async def _release(
        self,
        lease: Lease,
        changes: tuple[list[str], list[str]] | None,
        *,
        global_too: bool = True,
        riders: Sequence[BatchCall] = (),
    ) -> Any:
        """The lease_release reply: a number on success (see `_returned`), else a list."""
        cfg = self.context.settings
        keys = self.context.keys.session(lease.session_id)
        batch = Batch(self.context.redis)
        args: list[Arg] = [lease.kind, lease.lease_id]
        if changes is not None and lease.draft is not None:
            sets, deletes = changes
            args += [lease.draft.version, cfg.max_state_bytes, cfg.max_attributes]
            args += [len(sets) // 2, len(deletes), *sets, *deletes]
        batch.script(script("lease_release"), keys.ordered(), args)
        if lease.global_lease and global_too:
            batch.script(
                script("global_lease"),
                [self.context.keys.global_requests()],
                ["release", lease.global_member],
            )
        for rider in riders:
            batch.add(rider)
        return (await batch.execute())[0]

    def _committed(self, lease: Lease, reply: Any) -> None:
        """Take the new version from a commit's reply, or raise why it was refused."""
        cfg = self.context.settings
        draft = lease.draft
        if not isinstance(reply, list) or reply[0] == "ok":
            if draft is not None:
                draft.version = int(reply if not isinstance(reply, list) else reply[2])
            return
        if reply[0] == "version":
            raise VersionConflict(lease.session_id, draft.version if draft else 0, int(reply[1]))
        if reply[0] == "too_large":
            raise PayloadTooLarge("state size in bytes", int(reply[1]), cfg.max_state_bytes)
        if reply[0] == "too_many":
            raise PayloadTooLarge("attribute count", int(reply[1]), cfg.max_attributes)
        raise_refusal(lease.session_id, reply)

    async def take_fleet(self) -> str:
        """Take a fleet-wide lease for a request of no session (one round trip); returns
        its member in the fleet-wide set.

        Raises:
            GlobalLimitExceeded: the fleet is at `max_requests_global`.
        """
        limit = self.context.settings.max_requests_global
        member = f"{FLEET_MEMBER}:{secrets.token_hex(8)}"
        reply = await call(
            self.context.redis,
            script("global_lease"),
            [self.context.keys.global_requests()],
            ["take", member, self.lease_ms, limit],
        )
        if reply[0] != "ok":
            raise GlobalLimitExceeded(limit)
        return member

    async def renew_fleet(self, member: str) -> None:
        """Push a fleet-wide lease's deadline out by another lease period.

        Raises:
            LockNotOwned: the lease lapsed and was reclaimed.
        """
        reply = await call(
            self.context.redis,
            script("global_lease"),
            [self.context.keys.global_requests()],
            ["renew", member, self.lease_ms, 0],
        )
        if reply[0] != "ok":
            raise LockNotOwned(f"lease {member}", "lapsed and was reclaimed")

    async def release_fleet(self, member: str) -> None:
        """Return a member of the fleet-wide set (a fleet lease, or the fleet-wide half
        of a session's lease); one round trip, and returning it twice is harmless."""
        await call(
            self.context.redis,
            script("global_lease"),
            [self.context.keys.global_requests()],
            ["release", member],
        )

    def track(
        self, session_id: str, kind: LeaseKind = "requests", *, read_session: bool = False
    ) -> TrackedLease:
        """An async context manager holding a lease for its body; see `TrackedLease`."""
        return TrackedLease(self, session_id, kind, read_session=read_session)


class TrackedLease:
    """``async with``: take a lease on entry, renew it while the body runs, return it on exit.

    With ``read_session``, changes staged in ``lease.draft`` are committed with the
    lease's return when the body ends without an error (compare-and-set on the
    version read at entry: `VersionConflict` from the exit, nothing written).

    If returning the lease fails after the body raised, the body's error wins
    and the lease lapses by itself at its deadline (logged).

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        tracker: LeaseTracker,
        session_id: str,
        kind: LeaseKind,
        *,
        read_session: bool = False,
    ) -> None:
        self._read_session = read_session
        self._tracker = tracker
        self._session_id = session_id
        self._kind = kind
        self.lease: Lease | None = None
        #: Commands to send in the same round trip as the lease's return (say, the
        #: write of a response that must be stored once the request is done).
        self.riders: list[BatchCall] = []

    async def __aenter__(self) -> Lease:
        lease = await self._tracker.take(
            self._session_id, self._kind, read_session=self._read_session
        )
        lease._renewer = Renewal(self._tracker.lease_seconds / 3, lambda: self._renew(lease))
        self.lease = lease
        return lease

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        lease = self.lease
        if lease is None:
            return
        if lease._renewer is not None:
            lease._renewer.stop()
        try:
            # The draft's changes are committed only when the body succeeded.
            await self._tracker.release(lease, commit=exc is None, riders=self.riders)
        except SessionStoreError:
            if exc is None:
                raise
            logger.warning(
                "could not return lease %s of session %s; it lapses at its deadline",
                lease.lease_id,
                short_id(lease.session_id),
                exc_info=True,
            )

    async def _renew(self, lease: Lease) -> bool:
        """One renewal; False when there is nothing more to renew."""
        try:
            await self._tracker.renew(lease)
        except (SessionGone, SessionNotFound):
            # The session ended while the connection was open: nothing to keep.
            logger.info(
                "lease %s stops renewing: session %s ended",
                lease.lease_id,
                short_id(lease.session_id),
            )
            return False
        except SessionStoreError:
            logger.warning(
                "lease %s of session %s could not be renewed",
                lease.lease_id,
                short_id(lease.session_id),
                exc_info=True,
            )
            return False
        return True


class TrackedFleetLease:
    """``async with``: a fleet-wide request lease for a request that belongs to no session.

    Such a request counts against `max_requests_global` in the same set as every
    session's requests, so the limit holds for both kinds together; it is renewed
    in the background while the body runs and lapses by itself if its holder dies.
    Without a global limit there is nothing to count against: nothing is sent.

    Raises:
        GlobalLimitExceeded: (on entry) the fleet is at `max_requests_global`.

    .. versionadded:: 0.1
    """

    def __init__(self, tracker: LeaseTracker) -> None:
        self._tracker = tracker
        #: The lease's member in the fleet-wide set while it is held.
        self.member: str | None = None
        self._renewer: Renewal | None = None

    async def __aenter__(self) -> TrackedFleetLease:
        if self._tracker.context.settings.max_requests_global > 0:
            member = self.member = await self._tracker.take_fleet()
            self._renewer = Renewal(self._tracker.lease_seconds / 3, lambda: self._renew(member))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        member, self.member = self.member, None
        if self._renewer is not None:
            self._renewer.stop()
        if member is None:
            return
        try:
            await self._tracker.release_fleet(member)
        except SessionStoreError:
            if exc is None:
                raise
            logger.warning(
                "could not return fleet lease %s; it lapses at its deadline", member, exc_info=True
            )

    async def _renew(self, member: str) -> bool:
        """One renewal; False when there is nothing more to renew."""
        try:
            await self._tracker.renew_fleet(member)
        except SessionStoreError:
            logger.warning("fleet lease %s could not be renewed", member, exc_info=True)
            return False
        return True


class Renewal:
    """Renews a held lease in the background: `renew` once every `period` seconds,
    the first one period after it is made, until `renew` says False or `stop`.

    Until the first renewal it is a timer, not a sleeping task: most requests end
    before it, and a timer costs a fraction of a task to start and to cancel.
    """

    def __init__(self, period: float, renew: Callable[[], Awaitable[bool]]) -> None:
        self._period = period
        self._renew = renew
        self._task: asyncio.Task[None] | None = None
        self._timer = asyncio.get_running_loop().call_later(period, self._start)

    def _start(self) -> None:
        self._task = asyncio.create_task(self._renew_forever())

    async def _renew_forever(self) -> None:
        # Renew now (the timer waited the first period), then every period.
        while True:
            if not await self._renew():
                return
            await asyncio.sleep(self._period)

    def done(self) -> bool:
        """Whether renewing has ended (its `renew` said False, or it was stopped)."""
        return self._task is not None and self._task.done()

    def stop(self) -> None:
        """Stop renewing (a renewal under way is cancelled)."""
        self._timer.cancel()
        if self._task is not None:
            self._task.cancel()


def _returned(reply: Any, *, committing: bool) -> bool:
    """Whether a lease_release reply says the lease was found where it was looked for:
    not when nothing was removed, or when the record was not there (a commit's
    ``gone``/``missing``): the session may have been rotated away. A number is the
    removed count (0 or 1) without a commit, the new version with one (the lease
    removed)."""
    if not isinstance(reply, list):
        return committing or bool(int(reply))
    if reply[0] == "ok":
        return bool(int(reply[1]))
    return reply[0] not in ("gone", "missing")
