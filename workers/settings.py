"""The arq ``WorkerSettings`` of the fleet, assembled from `sessionstore.Settings`.

``arq workers.WorkerSettings`` and ``sessionstore worker`` both start a worker
from it. `build_worker_settings` reads nothing and connects to nothing: it
turns settings into the class arq wants. The module attribute
``WorkerSettings`` is built on first access from the environment (once per
process), so importing this module never needs a Redis URL; Redis clients are
created in ``on_startup``, kept in ``ctx`` (`WorkerContext`) and closed in
``on_shutdown``.

Each module of ``workers/`` contributes a `JobFamily`; to add one, append its
``family`` function to `FAMILIES`.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from functools import cache
from typing import Any

from arq.connections import RedisSettings as ArqRedisSettings

from sessionstore import (
    Heartbeat,
    InvalidInput,
    KeySpace,
    RedisSettings,
    SessionSettings,
    SessionStore,
    Settings,
    WorkerConfig,
    create_client,
)

from . import heartbeat, reconnect, repair, sweep
from .context import JobFamily, WorkerContext

logger = logging.getLogger("sessionstore.workers")

#: Every job family of the worker: ``family(settings) -> JobFamily``. A family reads
#: the settings it needs (``settings.worker``, its own fields...).
FAMILIES: list[Callable[[Settings], JobFamily]] = [
    sweep.family,
    repair.family,
    heartbeat.family,
    reconnect.family,
]

MISSING_URL = (
    "SESSIONSTORE_REDIS_URL is not set: a worker needs the session store's Redis "
    "(e.g. SESSIONSTORE_REDIS_URL=redis://127.0.0.1:6379/0); "
    "`sessionstore dev` starts a local one for development"
)


def arq_redis_settings(settings: RedisSettings) -> ArqRedisSettings:
    """arq's connection settings for the queue's Redis (standalone or Sentinel).

    Raises:
        InvalidInput: a cluster URL (arq cannot use Redis Cluster).
    """
    if settings.mode == "cluster":
        raise InvalidInput(
            "the job queue cannot be on Redis Cluster (arq does not support it): "
            "set SESSIONSTORE_QUEUE_REDIS_URL to a standalone or Sentinel Redis"
        )
    password = settings.password.get_secret_value() if settings.password else None
    common: dict[str, Any] = {
        "database": settings.database,
        "username": settings.username,
        "password": password,
        "ssl": settings.tls,
        "conn_timeout": max(1, round(settings.connect_timeout.total_seconds())),
    }
    if settings.mode == "sentinel":
        return ArqRedisSettings(
            host=list(settings.hosts),
            sentinel=True,
            sentinel_master=settings.sentinel_master,
            **common,
        )
    if settings.unix_socket_path:
        return ArqRedisSettings(unix_socket_path=settings.unix_socket_path, **common)
    host, port = settings.hosts[0]
    return ArqRedisSettings(host=host, port=port, **common)


class _Fleet:
    """The resources' lifecycle: what on_startup builds and on_shutdown closes."""

    def __init__(
        self,
        store_redis: RedisSettings,
        session: SessionSettings,
        config: WorkerConfig,
        queue: str,
        families: list[JobFamily],
    ) -> None:
        self.store_redis = store_redis
        self.session = session
        self.config = config
        self.queue = queue
        self.families = families

    async def on_startup(self, ctx: WorkerContext) -> None:
        client = create_client(self.store_redis)
        ctx["store_redis"] = client
        ctx["store"] = SessionStore(client, self.session)
        ctx["config"] = self.config
        ctx["queue_name"] = self.queue
        ctx["heartbeat"] = Heartbeat(
            worker_id=self.config.resolved_worker_id(),
            host=socket.gethostname(),
            pid=os.getpid(),
            queue=self.queue,
        )
        await ctx["store"].load_scripts()  # fails fast and clearly when the store is down
        for family in self.families:
            for hook in family.on_startup:
                await hook(ctx)
        logger.info(
            "worker %s started: store %s, %s cleanup",
            ctx["heartbeat"].worker_id,
            self.store_redis.to_dsn(),
            "aggressive" if self.config.aggressive_cleanup else "standard",
        )

    async def on_shutdown(self, ctx: WorkerContext) -> None:
        if "store_redis" not in ctx:
            return  # start-up failed before anything was opened
        try:
            for family in reversed(self.families):
                for hook in family.on_shutdown:
                    await hook(ctx)
        finally:
            await ctx["store_redis"].aclose()

    async def on_job_end(self, ctx: WorkerContext) -> None:
        for family in self.families:
            for hook in family.on_job_end:
                await hook(ctx)


def build_worker_settings(settings: Settings, *, redis_url: str | None = None) -> type:
    """An arq ``WorkerSettings`` class for `settings` (connects to nothing).

    Args:
        settings: everything configurable (read from the environment by the caller).
        redis_url: the store's Redis; defaults to ``settings.redis_url`` (the dev
            command passes the URL of the local server it started).

    Raises:
        InvalidInput: no store URL, a queue on Redis Cluster, or a bad URL.
        pydantic.ValidationError: a worker or session setting is out of range.
    """
    url = redis_url or settings.redis_url
    if not url:
        raise InvalidInput(MISSING_URL)
    session = settings.session
    config = settings.worker
    queue_redis = arq_redis_settings(settings.queue_redis(url))
    queue = config.queue_name or KeySpace(session.key_prefix, session.shards).job_queue()
    families = [make(settings) for make in FAMILIES]
    fleet = _Fleet(settings.store_redis(url), session, config, queue, families)
    attributes: dict[str, Any] = {
        "__doc__": "arq worker settings of the sessionstore fleet (see workers/settings.py).",
        "functions": [f for family in families for f in family.functions],
        "cron_jobs": [job for family in families for job in family.cron_jobs],
        "redis_settings": queue_redis,
        # Not arq's: `sessionstore worker` builds its queue pool from it, with a read timeout.
        "queue_redis": settings.queue_redis(url),
        "queue_name": queue,
        "on_startup": fleet.on_startup,
        "on_shutdown": fleet.on_shutdown,
        "on_job_end": fleet.on_job_end,
        "job_timeout": config.job_timeout,
        "keep_result": 0,
        "max_tries": 3,
    }
    return type("WorkerSettings", (), attributes)


@cache
def _from_environment() -> type:
    return build_worker_settings(Settings())


def __getattr__(name: str) -> Any:
    """``WorkerSettings``: built from the environment on first access, once."""
    if name == "WorkerSettings":
        return _from_environment()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
