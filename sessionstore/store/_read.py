"""Reading a session (or the tombstone of an ended id) with plain commands.

A read changes nothing, so it needs no script: TIME, the record (its request
and connection leases are fields of it) and the tombstone go out in one
pipeline, one round trip. A script would cost Redis several times as much,
because every field of the record would pass through Lua twice (into a Lua
table, then into the reply). The live leases are counted here, from the
record's lease fields against Redis' clock.

The commands are not atomic together, and need not be: each answers for
itself, and no interleaving changes what the read says. A record ends by one
script that writes its tombstone as it deletes it, so a record missing from
the read means the tombstone (or nothing) is what a reader should see; a
record read just before a concurrent write is the session just before it.
On a cluster, TIME goes to the node that holds the session, so the clock is
the one its deadlines were computed with.
"""

from __future__ import annotations

from typing import Any

from .._keys import SessionKeys
from .._redis import RedisClient
from .._scripts import Batch
from ._models import Session, Tombstone

#: Replies `queue_read` adds to a batch.
READ_REPLIES = 3


def queue_read(batch: Batch, keys: SessionKeys) -> int:
    """Queue the read of one session; returns the index of its first reply."""
    first = batch.command("TIME", near=keys.record)
    batch.command("HGETALL", keys.record)
    batch.command("HGETALL", keys.tombstone)
    return first


async def read_session(
    redis: RedisClient, keys: SessionKeys, session_id: str
) -> Session | Tombstone | None:
    """The session, its tombstone, or None (neither), in one round trip of its own."""
    batch = Batch(redis)
    queue_read(batch, keys)
    return decode_read(session_id, await batch.execute())


def decode_read(session_id: str, replies: list[Any]) -> Session | Tombstone | None:
    """The session, its tombstone, or None (neither), from `queue_read`'s replies."""
    seconds, micros = replies[0]
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    record: dict[str, str] = replies[1]
    # A record without `idle_end` is an earlier build's, with the long field names: it
    # is not read, so it answers as no record (docs/keys.md).
    if "idle_end" in record:
        return Session.from_record(session_id, record, now_ms=now_ms)
    tomb: dict[str, str] = replies[2]
    if tomb:
        return Tombstone.from_record(session_id, tomb)
    return None
