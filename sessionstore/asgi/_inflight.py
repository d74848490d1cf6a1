"""In-flight session requests of one process, for graceful shutdown.

The middleware registers each request lease it holds. On shutdown it stops
taking new ones, waits (bounded) for the running requests to finish, then
returns whatever leases are still held, so the rest of the fleet does not
count them until they lapse.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from ..exceptions import SessionStoreError
from ..store import Lease, SessionStore

logger = logging.getLogger("sessionstore.asgi")


@dataclass(frozen=True)
class DrainResult:
    """What a drain did.

    .. versionadded:: 0.1
    """

    #: Requests that finished by themselves within the timeout.
    finished: int
    #: Leases of requests still running at the deadline, returned by the drain.
    released: int


class InFlightRequests:
    """The session requests this process is serving, with their leases.

    .. versionadded:: 0.1
    """

    def __init__(self) -> None:
        self._held: dict[int, tuple[SessionStore, Lease]] = {}
        self._idle: asyncio.Event | None = None
        self.closing = False

    def __len__(self) -> int:
        return len(self._held)

    def add(self, store: SessionStore, lease: Lease) -> int:
        """Register a held lease; returns a ticket for `remove`."""
        ticket = id(lease)
        self._held[ticket] = (store, lease)
        if self._idle is not None:
            self._idle.clear()
        return ticket

    def remove(self, ticket: int) -> None:
        """Forget a lease whose request has finished (its lease is returned)."""
        self._held.pop(ticket, None)
        if not self._held and self._idle is not None:
            self._idle.set()

    async def drain(self, timeout: float) -> DrainResult:
        """Refuse new requests, wait up to `timeout` seconds, then return leftover leases.

        A lease that cannot be returned (Redis down) is logged; it lapses at
        its deadline by itself.
        """
        self.closing = True
        before = len(self._held)
        if self._held:
            self._idle = asyncio.Event()
            try:
                await asyncio.wait_for(self._idle.wait(), timeout)
            except TimeoutError:
                logger.warning("%d request(s) still running after %.1fs", len(self._held), timeout)
        leftover = list(self._held.values())
        self._held.clear()
        for store, lease in leftover:
            try:
                await store.leases.release(lease)
            except SessionStoreError:
                logger.warning(
                    "could not return lease %s; it lapses at its deadline",
                    lease.lease_id,
                    exc_info=True,
                )
        return DrainResult(finished=before - len(leftover), released=len(leftover))
