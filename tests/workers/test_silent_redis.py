"""A worker whose queue connections go silent (a hung primary, a network cut: no reply,
no reset) is reported dead while its job loop is stuck, and works again by itself once
Redis answers: a real worker process, its queue Redis behind a proxy that can go silent."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from sessionstore import (
    RedisSettings,
    SessionSettings,
    SessionStore,
    Tombstone,
    WorkerState,
    create_client,
    list_workers,
)
from sessionstore.testing import ChildProcess, LocalRedis
from tests.polling import eventually

pytestmark = [pytest.mark.slow, pytest.mark.fleet]

PREFIX = "silent"
DEAD_AFTER = timedelta(seconds=2)


class SilentProxy:
    """A TCP proxy that can go silent without closing anything.

    While cut it forwards no byte in either direction and keeps every socket open.
    After `heal`, connections opened from then on forward again; those opened
    before stay silent for good, as TCP connections across a cut do.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.cut = False
        self.generation = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def go_silent(self) -> None:
        self.cut = True

    def heal(self) -> None:
        self.generation += 1
        self.cut = False

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        generation = self.generation
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [writer, up_writer]
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(source, sink, generation))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, generation: int
    ) -> None:
        with contextlib.suppress(OSError):
            while data := await source.read(65536):
                if self.cut or generation != self.generation:
                    continue  # swallowed: the peer hears nothing, and nothing is closed
                sink.write(data)
                await sink.drain()
        sink.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in self._writers:
            writer.close()
        await asyncio.gather(*(w.wait_closed() for w in self._writers), return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[LocalRedis]:
    server = LocalRedis(directory=str(tmp_path / "redis")).start()
    yield server
    server.stop()


@pytest.fixture
async def proxy(redis_server: LocalRedis) -> AsyncIterator[SilentProxy]:
    port = int(redis_server.url.rsplit(":", 1)[1].split("/")[0])
    silent = SilentProxy(port)
    await silent.start()
    yield silent
    await silent.stop()


@pytest.fixture
def worker(redis_server: LocalRedis, proxy: SilentProxy, tmp_path: Path) -> Iterator[ChildProcess]:
    """A worker whose store Redis is reached directly and whose queue goes through the proxy."""
    env = {
        **os.environ,
        "SESSIONSTORE_REDIS_URL": redis_server.url,
        "SESSIONSTORE_QUEUE_REDIS_URL": proxy.url,
        "SESSIONSTORE_KEY_PREFIX": PREFIX,
        "SESSIONSTORE_SHARDS": "2",
        "SESSIONSTORE_WORKER_ID": "silent",
        "SESSIONSTORE_HEARTBEAT_INTERVAL": "0.5",
        "SESSIONSTORE_WORKER_DEAD_AFTER": "2",
        "SESSIONSTORE_SWEEP_INTERVAL": "1",
        "SESSIONSTORE_REPAIR_INTERVAL": "86400",
    }
    process = ChildProcess(
        "worker",
        [sys.executable, "-m", "sessionstore", "worker"],
        log_path=tmp_path / "worker.log",
        env=env,
    ).start()
    yield process
    process.kill()


@pytest.fixture
async def store(redis_server: LocalRedis) -> AsyncIterator[SessionStore]:
    client = create_client(RedisSettings.from_dsn(redis_server.url))
    yield SessionStore(client, SessionSettings(key_prefix=PREFIX, shards=2))
    await client.aclose()


async def _state(store: SessionStore) -> WorkerState | None:
    found = await list_workers(store.redis, store.keys, dead_after=DEAD_AFTER)
    return next((w.state for w in found if w.id == "silent"), None)


async def _swept_by_the_worker(store: SessionStore) -> None:
    due = await store.create(idle_timeout=timedelta(milliseconds=1))

    async def expired() -> bool:
        found = await store.lookup(due.id)
        return isinstance(found, Tombstone) and found.reason == "idle"

    await eventually(expired, timeout=60, interval=0.1)


async def test_a_silent_queue_makes_the_worker_dead_until_it_works_again(
    proxy: SilentProxy,
    worker: ChildProcess,
    store: SessionStore,
) -> None:
    """Queue connections go silent: the worker (its store still reachable) is reported
    dead, not live; the cut heals: the worker beats and sweeps again by itself."""

    async def state_is(wanted: WorkerState) -> bool:
        worker.check_alive()
        return await _state(store) is wanted

    await eventually(lambda: state_is(WorkerState.LIVE), timeout=60, interval=0.1)
    await _swept_by_the_worker(store)

    proxy.go_silent()
    await eventually(lambda: state_is(WorkerState.DEAD), timeout=30, interval=0.1)

    proxy.heal()
    await eventually(lambda: state_is(WorkerState.LIVE), timeout=60, interval=0.1)
    await _swept_by_the_worker(store)
    assert "lost Redis" in worker.log()
