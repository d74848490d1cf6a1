"""`StoreContext`: what every store helper needs to reach Redis.

`SessionStore` hands its helpers (leases, locks, successors, the user index,
counts, sweeps, repair, listing) this small frozen object instead of itself,
so no helper imports the store back and each can be used on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .._keys import KeySpace
from .._redis import RedisClient
from ..settings import SessionSettings


@dataclass(frozen=True, slots=True)
class StoreContext:
    """A store's client, key space and settings.

    .. versionadded:: 0.1
    """

    redis: RedisClient
    keys: KeySpace
    settings: SessionSettings

    @classmethod
    def of(cls, redis: RedisClient, settings: SessionSettings) -> StoreContext:
        """The context of a store on `redis` with `settings` (its key space derived)."""
        return cls(redis, KeySpace(settings.key_prefix, settings.shards), settings)


class HasStoreContext(Protocol):
    """Anything that carries a `StoreContext` (a `SessionStore`)."""

    @property
    def context(self) -> StoreContext:
        """The store's client, key space and settings."""
        ...
