"""Trying a connection before it is registered: connect, log in, NOOP, close.

A registration that the upstream would refuse (a wrong password, a host that
does not speak the protocol) is better refused at once than stored and found
out on the first use. `verify_upstream` does what a reconnect job does —
the connector's connect and probe under the upstream's circuit breaker — but
with nothing in Redis yet: it writes no record, queues no job and keeps no
socket. Its outcome counts against the breaker exactly as a call would: a
refused or timed-out connection does, a wrong password does not.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from pydantic import SecretStr

from ..breaker import Outcome
from ..exceptions import BreakerOpen, InvalidInput, UpstreamRejected, UpstreamUnavailable
from ._classify import Action
from ._connector import describe
from ._gates import settle
from ._spec import UpstreamSpec

if TYPE_CHECKING:
    from ._pool import UpstreamPool


async def verify_upstream(
    pool: UpstreamPool,
    spec: UpstreamSpec,
    *,
    secret: SecretStr | None = None,
    credential_ref: str | None = None,
) -> float:
    """Open a connection with this spec and credential, probe it, close it.

    The credential is checked as `UpstreamPool.register` would check it (a
    secret needs an encryption key; a reference needs a provider) and then
    resolved here, so a reference that resolves to nothing on this process
    is refused too.

    Returns:
        The probe's round trip in milliseconds.

    Raises:
        InvalidInput: no connector for ``spec.kind``; bad credential input.
        BreakerOpen: the upstream's breaker refuses calls; nothing was sent.
        UpstreamRejected: the upstream refused (bad credentials, TLS, ...) or the
            reference resolves to nothing (``credential_unavailable``); not retried,
            never counted against the breaker.
        UpstreamUnavailable: unreachable, dropped or timed out (counted against
            the breaker); ``retry_after`` is the profile's first backoff.

    .. versionadded:: 0.1
    """
    pool.require_open()
    connector = pool.connectors.get(spec.kind)
    if connector is None:
        raise InvalidInput(f"no connector for upstream kind {spec.kind!r}")
    stored = pool.credentials.seal_for(connector, secret=secret, ref=credential_ref)
    if secret is None:
        secret = await pool.credentials.open_stored(stored, upstream=spec.name)
    gate = await pool.gates.gate(spec.breaker_name)
    if not gate.lets_callers_through:
        # As in the pool: half-open probes are the reconnect jobs' to take.
        raise BreakerOpen(spec.breaker_name, gate.retry_after())
    ticket = await gate.admit()
    conn = None
    try:
        conn = await connector.connect(spec, secret)
        started = time.perf_counter()
        await connector.probe(conn)
        elapsed_ms = (time.perf_counter() - started) * 1000
    except asyncio.CancelledError:
        await ticket.cancel()
        raise
    except Exception as exc:
        verdict = await settle(ticket, exc, connector)
        text = describe(verdict, exc, connector=connector, secret=secret)
        # `from None`: the text is redacted, the original exception may not be.
        if verdict.action is Action.FAIL:
            raise UpstreamRejected(spec.name, text, reason=verdict.reason) from None
        raise UpstreamUnavailable(
            spec.name,
            text,
            reason=verdict.reason,
            attempts=1,
            retry_after=pool.settings.backoff.ceiling(1),
        ) from None
    finally:
        if conn is not None:
            await connector.close(conn)
    await ticket.finish(Outcome.SUCCESS)
    return elapsed_ms
