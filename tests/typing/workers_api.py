"""Type-checked use of the worker fleet's public API (run by mypy, never by pytest)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sessionstore import (
    Event,
    EventConsumer,
    EventFollower,
    EventKind,
    Heartbeat,
    KeySpace,
    RedisSettings,
    RepairReport,
    SessionSettings,
    SessionStore,
    Settings,
    SweepReport,
    WorkerConfig,
    WorkerInfo,
    WorkerState,
    create_client,
    list_workers,
    publish_heartbeat,
    repair_store,
    sweep_store,
)


async def use_the_fleet_api() -> None:
    client = create_client(RedisSettings.from_dsn("redis://127.0.0.1:6379/0"))
    settings = SessionSettings()
    store = SessionStore(client, settings)
    config: WorkerConfig = Settings().worker
    swept: SweepReport = await sweep_store(
        store, batch=config.sweep_batch_size, time_budget=config.sweep_time_budget
    )
    repaired: RepairReport = await repair_store(store, cursor=None, batch=100)
    follower = EventFollower(client, settings, after="0", block=timedelta(milliseconds=100))
    events: list[Event] = await follower.read()
    expired = [e for e in events if e.kind == EventKind.EXPIRED]
    cursor: dict[int, str] = follower.cursor
    consumer = EventConsumer(client, settings, group="g", consumer="c")
    async for event in consumer:
        acked: int = await consumer.ack(event)
        print(acked)
        break
    keys = KeySpace(settings.key_prefix, settings.shards)
    beat = Heartbeat(worker_id="w", host="h", pid=1, queue=keys.job_queue())
    at: datetime = await publish_heartbeat(client, keys, beat, ttl=config.heartbeat_ttl)
    workers: list[WorkerInfo] = await list_workers(client, keys, dead_after=timedelta(seconds=30))
    dead = [w for w in workers if w.state is WorkerState.DEAD]
    print(swept.handled, repaired.fixed, expired, cursor, at, dead)
    await client.aclose()
