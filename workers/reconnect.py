"""Reconnect jobs: one per upstream connection fleet-wide, spaced by backoff, breaker-aware.

When an operation on an upstream (a session's IMAP account) has spent its
attempts, or the upstream's breaker refuses calls, the pool queues
``<prefix>:reconnect_upstream`` with a job id derived from the session and
upstream (`KeySpace.reconnect_job_id`): arq refuses a second job with that
id while one is queued, deferred or running, so however many replicas fail
at once, one job per connection exists. The job:

- does nothing if the session ended (its records went with it) or the
  record is no longer ``reconnecting`` (a replica reconnected first);
- with the breaker open, does not touch the upstream: it re-queues itself
  (``arq.Retry``, same id) for when the breaker may half-open;
- otherwise connects, logs in and sends NOOP (with the breaker half-open,
  this is one of the fleet's probes), records the outcome, and on failure
  re-queues itself after the reconnect backoff, until the attempts are spent
  (then the record is ``failed``).

The session id travels as a `pydantic.SecretStr`: arq logs job arguments.

`family(settings)` contributes the job and the hooks that put a `Reconnector`
(with the worker's `BreakerRegistry`) in ``ctx``; it is listed in
``workers/settings.py``'s FAMILIES.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from arq.worker import Function, Retry, func
from pydantic import SecretStr

from sessionstore import SessionStore, Settings, UpstreamSettings
from sessionstore.breaker import BreakerRegistry
from sessionstore.upstream import (
    RECONNECT_JOB,
    BreakerGates,
    Gates,
    Reconnector,
    UpstreamRecords,
    connectors_for,
    credentials_for,
)

from .context import JobFamily, WorkerContext, as_arq, job_name

#: Retries are counted in the connection's record (reconnect_backoff.max_attempts),
#: not by arq, whose tries also include breaker deferrals.
_ARQ_MAX_TRIES = 10_000


async def reconnect_upstream(ctx: WorkerContext, session: SecretStr | str, upstream: str) -> str:
    """One reconnect attempt; ``arq.Retry`` (same job id) to try again later.

    Returns:
        ``connected``, ``failed``, ``gone`` or ``skipped`` (see `ReconnectResult`).
    """
    reconnector = ctx["reconnector"]
    session_id = session.get_secret_value() if isinstance(session, SecretStr) else session
    result = await reconnector.attempt(session_id, upstream)
    if result.status in ("retry", "deferred"):
        raise Retry(defer=result.delay or None)
    return result.status


def reconnect_function(key_prefix: str, settings: UpstreamSettings) -> Function:
    """The arq function of the reconnect job, named ``<key_prefix>:reconnect_upstream``.

    Its timeout covers one connect and one NOOP, so a killed worker's job is
    re-run soon (arq re-runs after the longest job timeout + 10 s).
    """
    timeout = settings.connect_timeout + settings.call_timeout
    return func(
        as_arq(reconnect_upstream),
        name=job_name(key_prefix, RECONNECT_JOB),
        timeout=timeout.total_seconds() + 5,
        keep_result=0,  # a kept result would block the next job with the same id
        max_tries=_ARQ_MAX_TRIES,
    )


def build_reconnector(
    store: SessionStore,
    settings: Settings,
    *,
    environ: Mapping[str, str],
    gates: Gates | None = None,
) -> Reconnector:
    """The `Reconnector` a worker uses, from settings (credentials, connectors, profile)."""
    upstream = settings.upstream
    return Reconnector(
        UpstreamRecords(store, max_per_session=upstream.max_upstreams_per_session),
        connectors=connectors_for(upstream),
        credentials=credentials_for(settings, environ),
        settings=upstream,
        gates=gates,
    )


def family(settings: Settings) -> JobFamily:
    """The reconnect job, and the hooks that build its `Reconnector` and breakers.

    The worker's own `BreakerRegistry` (on the store's Redis) lets the job see
    the fleet's breakers and take half-open probe slots. `os.environ` feeds
    ``env:`` credential references: this is the worker's edge.
    """

    async def start(ctx: WorkerContext) -> None:
        registry = BreakerRegistry(
            ctx["store_redis"], settings.breaker, key_prefix=settings.session.key_prefix
        )
        await registry.open()
        ctx["breakers"] = registry
        ctx["reconnector"] = build_reconnector(
            ctx["store"], settings, environ=os.environ, gates=BreakerGates(registry)
        )

    async def stop(ctx: WorkerContext) -> None:
        if "breakers" in ctx:
            await ctx["breakers"].aclose()

    function = reconnect_function(settings.session.key_prefix, settings.upstream)
    return JobFamily("reconnect", functions=[function], on_startup=[start], on_shutdown=[stop])
