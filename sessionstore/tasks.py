"""Stopping background tasks for sure.

On Python 3.11 a cancellation that lands inside redis-py's read timeout can be
swallowed: the call returns (or raises a timeout, which the loops treat as an
outage and retry) and the task runs on. Awaiting such a task after one
``cancel()`` waits forever, and a server or worker then never finishes its
shutdown. `stop_tasks` cancels again until every task has ended. Public
(``sessionstore.tasks``): the arq layer in ``workers/`` uses it too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

logger = logging.getLogger("sessionstore")

#: How long a cancelled task gets before it is cancelled again.
_RECANCEL_AFTER = 0.1


async def stop_tasks(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel `tasks` and return once all have ended; a task that had failed is logged.

    .. versionadded:: 0.1
    """
    stopping = list(tasks)
    pending = {task for task in stopping if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=_RECANCEL_AFTER)
    for task in stopping:
        if not task.cancelled() and (error := task.exception()) is not None:
            logger.warning("background task %s had failed", task.get_name(), exc_info=error)
