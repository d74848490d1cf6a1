"""``sessionstore worker``: run one arq worker of the fleet in this process.

The same worker as ``arq workers.WorkerSettings``, except that it rides out
outages of Redis once it has started (``workers.runner``) where arq's own
command exits. It needs the store's Redis (``SESSIONSTORE_REDIS_URL``);
``sessionstore dev`` runs it as a child process against the Redis it started.
"""

from __future__ import annotations

import logging.config

import pydantic
import redis.exceptions as rex
import typer

from .._environment import Settings
from ..exceptions import BackendUnavailable, InvalidInput


def run(settings: Settings, *, redis_url: str, burst: bool = False, verbose: bool = False) -> int:
    """Run a worker until it is stopped (SIGINT/SIGTERM) or, with `burst`, the queue is empty.

    Without `burst`, a Redis outage after start-up is waited out (the worker
    reconnects by itself); with `burst` it ends the run with the error.

    Returns:
        The number of jobs that failed (always 0 unless `burst`).

    Raises:
        InvalidInput / pydantic.ValidationError: bad settings.
        BackendUnavailable / redis.ConnectionError: a Redis could not be reached
            (at start-up; or at any time with `burst`).
    """
    from arq.logs import default_log_config
    from arq.worker import run_worker

    from workers.runner import run_until_stopped
    from workers.settings import build_worker_settings

    worker_settings = build_worker_settings(settings, redis_url=redis_url)
    config = default_log_config(verbose)
    # The fleet's own loggers (sessionstore.workers.*) print beside arq's.
    config["loggers"]["sessionstore"] = dict(config["loggers"]["arq"])
    logging.config.dictConfig(config)
    if burst:
        return int(run_worker(worker_settings, burst=True).jobs_failed)
    return int(run_until_stopped(worker_settings).jobs_failed)


def start_worker(
    burst: bool = typer.Option(False, "--burst", help="Exit once the queue is empty."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at debug level."),
) -> None:
    """Run a worker: expiry sweeps, index repair, heartbeats (and the fleet's other jobs)."""
    try:
        settings = Settings()
        if not settings.redis_url:
            from workers.settings import MISSING_URL

            raise InvalidInput(MISSING_URL)
        failed = run(settings, redis_url=settings.redis_url, burst=burst, verbose=verbose)
    except (InvalidInput, pydantic.ValidationError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    except BackendUnavailable as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(3) from exc
    except (rex.ConnectionError, rex.TimeoutError, OSError) as exc:
        typer.echo(f"error: the job queue's Redis is unavailable: {exc}", err=True)
        raise typer.Exit(3) from exc
    if failed:
        typer.echo(f"error: {failed} job(s) failed", err=True)
        raise typer.Exit(1)
