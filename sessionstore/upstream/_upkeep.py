"""Upkeep of a pool's connections: which sessions ended, what a pass did."""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict

from .._scripts import Batch
from .._store import SessionStore


class MaintenanceReport(BaseModel):
    """What one `UpstreamPool.maintain` pass did.

    .. versionadded:: 0.1
    """

    model_config = ConfigDict(frozen=True)

    #: Connections closed because their session ended.
    ended: int
    #: Idle connections closed because they neared the maximum age.
    aged: int
    #: Idle connections found dead (lost, BYE) and dropped.
    dead: int


async def ended_sessions(store: SessionStore, session_ids: Iterable[str]) -> list[str]:
    """The ids among `session_ids` whose session ended or is past a deadline.

    One pipelined round trip (one per node on a cluster): Redis TIME and the
    deadlines of every record, compared here.
    """
    ids = sorted(session_ids)
    if not ids:
        return []
    batch = Batch(store.redis)
    batch.command("TIME")
    for session_id in ids:
        batch.command("HMGET", store.keys.session(session_id).record, "idle_deadline",
                      "absolute_deadline")  # fmt: skip
    replies = await batch.execute()
    seconds, micros = replies[0]
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    ended = []
    for session_id, deadlines in zip(ids, replies[1:], strict=True):
        if deadlines[0] is None or now_ms >= min(int(deadlines[0]), int(deadlines[1])):
            ended.append(session_id)
    return ended
