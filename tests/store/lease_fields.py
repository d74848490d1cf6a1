"""Where a session record holds a lease: its kind's slot or a field of its own."""

from __future__ import annotations

from collections.abc import Mapping

from sessionstore import RedisClient
from sessionstore.store._leases import Lease

#: A kind's slot (its first lease) and the prefix of its leases' own fields.
SLOT = {"requests": ("r", "r:"), "conns": ("c", "c:")}


def held_deadline(fields: Mapping[str, str], lease: Lease) -> int | None:
    """The deadline a record's fields (HGETALL) hold for `lease`, or None."""
    slot, prefix = SLOT[lease.kind]
    holder, _, deadline = (fields.get(slot) or "").partition(" ")
    if holder == lease.lease_id:
        return int(deadline)
    own = fields.get(prefix + lease.lease_id)
    return None if own is None else int(own)


async def lease_deadline(redis: RedisClient, record: str, lease: Lease) -> int | None:
    """The deadline the record `record` holds for `lease`, or None."""
    slot, prefix = SLOT[lease.kind]
    names = [slot, prefix + lease.lease_id]
    values: list[str | None] = await redis.hmget(record, names)  # type: ignore[misc]
    return held_deadline({n: v for n, v in zip(names, values, strict=True) if v is not None}, lease)


def lease_names(fields: Mapping[str, str]) -> list[str]:
    """The record's lease fields that hold something: non-empty slots, own fields,
    counts."""
    return [
        name
        for name, value in fields.items()
        if (name in ("r", "c") and value) or name[:2] in ("r:", "c:") or name.endswith("_leases")
    ]
