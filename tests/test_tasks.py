"""`stop_tasks`: background tasks end even when a library swallowed the first cancellation."""

from __future__ import annotations

import asyncio

import pytest

from sessionstore.tasks import stop_tasks


async def test_a_task_that_swallows_a_cancellation_is_cancelled_again() -> None:
    """Like a loop whose Redis read turned the cancel into a timeout and carried on."""
    cancels_seen = 0

    async def stubborn() -> None:
        nonlocal cancels_seen
        while True:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancels_seen += 1
                if cancels_seen == 1:
                    continue  # swallowed
                raise

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)  # let it start waiting
    await asyncio.wait_for(stop_tasks([task]), timeout=10)
    assert task.cancelled() and cancels_seen == 2


async def test_finished_and_failed_tasks_are_collected_and_a_failure_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def fail() -> None:
        raise RuntimeError("boom")

    async def succeed() -> None:
        return None

    failed = asyncio.create_task(fail(), name="the-failing-one")
    done = asyncio.create_task(succeed())
    await asyncio.wait({failed, done})
    await stop_tasks([failed, done])
    logged = [record.getMessage() for record in caplog.records]
    assert logged == ["background task the-failing-one had failed"]
