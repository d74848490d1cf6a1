"""Scheduling reconnect jobs: at most one per connection, fleet-wide.

When an operation has spent its attempts, or the upstream's breaker refuses,
the pool asks a `ReconnectScheduler` for a job. `ArqReconnects` enqueues the
arq job ``reconnect_upstream`` (``workers/reconnect.py``) with a job id built
from the session and upstream names (`KeySpace.reconnect_job_id`): while that
job is queued, deferred or running, arq refuses a second one with the same id,
however many replicas ask. The job re-queues itself with ``arq.Retry`` (same
id), so the whole reconnect loop stays one job.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol, runtime_checkable

from redis.exceptions import RedisError

from .._keys import KeySpace

logger = logging.getLogger("sessionstore.upstream")

#: The arq function name of the reconnect job.
RECONNECT_JOB = "reconnect_upstream"


@runtime_checkable
class ReconnectScheduler(Protocol):
    """Asks the worker fleet to reconnect one upstream connection later.

    .. versionadded:: 0.1
    """

    async def schedule(self, session_id: str, upstream: str, *, delay: float) -> bool:
        """Queue a reconnect in `delay` seconds; False if one was already queued."""
        ...


class ArqReconnects:
    """`ReconnectScheduler` on an arq queue.

    Args:
        queue: an ``arq.ArqRedis`` for the job queue's Redis (not a cluster).
        keys: the store's key space (builds the job ids).
        queue_name: the arq queue the workers listen on.

    .. versionadded:: 0.1
    """

    def __init__(self, queue: Any, keys: KeySpace, *, queue_name: str) -> None:
        self._queue = queue
        self._keys = keys
        self._queue_name = queue_name

    async def schedule(self, session_id: str, upstream: str, *, delay: float) -> bool:
        """Enqueue ``reconnect_upstream`` unless one is already queued for this connection.

        A queue that cannot be reached is logged and reported as False: the
        caller is already failing with the upstream's own error, and the next
        failure asks again.
        """
        job_id = self._keys.reconnect_job_id(session_id, upstream)
        try:
            job = await self._queue.enqueue_job(
                RECONNECT_JOB,
                session_id,
                upstream,
                _job_id=job_id,
                _queue_name=self._queue_name,
                _defer_by=max(0.0, delay) or None,
            )
        except (RedisError, OSError) as exc:
            logger.warning("could not queue reconnect job %s: %s", job_id, type(exc).__name__)
            return False
        return job is not None
