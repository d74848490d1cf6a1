"""Type-checked use of the public API (run by mypy, never by pytest).

If a signature changes in a way that breaks callers, mypy fails here.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sessionstore import (
    Lease,
    RedisSettings,
    Session,
    SessionCounts,
    SessionDraft,
    SessionSettings,
    SessionStore,
    Tombstone,
    create_client,
)


async def use_the_store() -> None:
    client = create_client(RedisSettings.from_dsn("redis://127.0.0.1:6379/0"))
    store = SessionStore(client, SessionSettings(idle_timeout=timedelta(minutes=5)))
    loaded: int = await store.load_scripts()
    session: Session = await store.create(user_id="u", metadata={"k": [1, "x"]})
    found: Session | Tombstone = await store.lookup(session.id)
    deadline: datetime = await store.touch(session.id)
    version: int = await store.set_state(session.id, {"a": 1}, delete=["b"], expected_version=1)
    changed: Session = await store.mutate(session.id, lambda state: {**state, "n": 1})
    async with store.track_request(session.id) as lease:
        held: Lease = lease
    async with store.track_request(session.id, read_session=True) as lease:
        draft: SessionDraft | None = lease.draft
        if draft is not None:
            draft["n"] = draft.get("n", 0) + 1
    async with store.lock(session.id, ttl=timedelta(seconds=5)) as fence:
        await store.set_state(session.id, {"a": 2}, fence=fence)
    counts: SessionCounts = await store.counts()
    ended: bool = await store.delete(session.id)
    print(loaded, found, deadline, version, changed, held, counts.sweeper_lag, ended)
    await client.aclose()
