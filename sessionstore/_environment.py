"""`Settings`: everything configurable, read from ``SESSIONSTORE_*`` variables.

Built only at the edge (the command line, the server's lifespan,
``workers/settings.py``). It declares no setting of its own beyond where Redis
is and the credential keys: it is the frozen per-concept settings
(`SessionSettings`, `BreakerSettings`, `WorkerConfig`, `ServerSettings` from
``settings/``, `UpstreamSettings` from ``upstream/``) composed, each read from
its own variables, and library code takes those objects as arguments. It sits
apart from ``settings/`` because it composes the upstream part too, which the
store core must not import.

A group's variables are ``SESSIONSTORE_<prefix><FIELD>``, with the prefixes of
`_GROUPS` (``SESSIONSTORE_IDLE_TIMEOUT`` is ``session.idle_timeout``,
``SESSIONSTORE_BREAKER_WINDOW`` is ``breaker.window``); `ENVIRONMENT_VARIABLES`
lists them all. The same names work as keywords of `Settings.model_validate`
(``{"idle_timeout": 90}``), which is how the fleet tests hand a child's
environment to the parent.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from .exceptions import InvalidInput
from .settings import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_SOCKET_TIMEOUT,
    BreakerSettings,
    Duration,
    EmptyIsNone,
    RedisSettings,
    ServerSettings,
    SessionSettings,
    WorkerConfig,
)
from .upstream import ProfileOverrides, UpstreamSettings

PREFIX = "SESSIONSTORE_"


@dataclass(frozen=True)
class _Group:
    """Where one `Settings` group's fields are read from."""

    prefix: str
    models: tuple[type[BaseModel], ...]
    #: Fields set in code only (no variable).
    code_only: frozenset[str] = frozenset()
    #: Fields whose variable does not follow ``<prefix><field>``.
    renamed: Mapping[str, str] = field(default_factory=dict)

    def variables(self) -> dict[str, str]:
        """Variable name (lower case, without ``SESSIONSTORE_``) to field name."""
        names: dict[str, str] = {}
        for model in self.models:
            for name in model.model_fields:
                if name not in self.code_only:
                    names[self.renamed.get(name, self.prefix + name)] = name
        return names


#: Each group of `Settings` and its variables.
_GROUPS: dict[str, _Group] = {
    "session": _Group("", (SessionSettings,), code_only=frozenset({"mutate_max_attempts"})),
    "breaker": _Group("breaker_", (BreakerSettings,)),
    "worker": _Group("", (WorkerConfig,)),
    "server": _Group(
        "",
        (ServerSettings,),
        renamed={
            "host": "server_host",
            "port": "server_port",
            "limit_concurrency": "server_limit_concurrency",
        },
    ),
    "upstream": _Group(
        "upstream_",
        (UpstreamSettings, ProfileOverrides),
        # The resolved policies follow from the profile and its overrides.
        code_only=frozenset(
            {"backoff", "reconnect_backoff", "refresh_margin", "max_upstreams_per_session"}
        ),
    ),
}


class Settings(BaseSettings):
    """Everything configurable, read from ``SESSIONSTORE_*`` environment variables.

    Durations accept seconds (``1800``) or ISO 8601 (``PT30M``); an empty
    value of an optional setting means unset.

    .. versionadded:: 0.1
    """

    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore")

    #: The session store's Redis. Empty: dev and tests start an embedded server.
    redis_url: EmptyIsNone[str] = None
    #: The job queue's Redis (arq cannot use Redis Cluster). Defaults to
    #: `redis_url` when that is not a cluster URL.
    queue_redis_url: EmptyIsNone[str] = None
    #: Connecting must fail fast when Redis is down.
    redis_connect_timeout: Duration = DEFAULT_CONNECT_TIMEOUT
    #: A command that gets no answer in this time fails with a backend error.
    redis_socket_timeout: Duration = DEFAULT_SOCKET_TIMEOUT
    #: Fernet keys that encrypt upstream credentials in Redis: comma-separated,
    #: newest first; older keys still decrypt (key rotation).
    secret_key: EmptyIsNone[SecretStr] = None

    #: Lifetimes, limits and the key space (``SESSIONSTORE_IDLE_TIMEOUT``...).
    session: SessionSettings = Field(default_factory=SessionSettings)
    #: Circuit breakers (``SESSIONSTORE_BREAKER_*``).
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)
    #: The worker fleet (``SESSIONSTORE_SWEEP_INTERVAL``...).
    worker: WorkerConfig = Field(default_factory=WorkerConfig)
    #: The reference server and middleware (``SESSIONSTORE_HEALTH_TOKEN``...).
    server: ServerSettings = Field(default_factory=ServerSettings)
    #: Upstream connections (``SESSIONSTORE_UPSTREAM_*``).
    upstream: UpstreamSettings = Field(default_factory=UpstreamSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keywords first, then the flat ``SESSIONSTORE_*`` variables of every group."""
        return (init_settings, _GroupedEnvironment(settings_cls))

    @model_validator(mode="before")
    @classmethod
    def _group_flat_names(cls, data: object) -> object:
        """Move variable-style keys (``idle_timeout``) into their group's fields."""
        if not isinstance(data, dict):
            return data
        grouped: dict[Any, Any] = {}
        flat: dict[str, dict[str, Any]] = {}
        for key, value in data.items():
            group, name = _FLAT_NAMES.get(str(key).lower(), (None, key))
            if group is None:
                grouped[key] = value
            else:
                flat.setdefault(group, {})[name] = value
        for group, fields in flat.items():
            given = grouped.get(group, {})
            if not isinstance(given, dict):
                raise ValueError(f"give {group} as an object or as its fields, not both")
            grouped[group] = {**given, **fields}
        return grouped

    def secret_keys(self) -> tuple[SecretStr, ...]:
        """The credential encryption keys from `secret_key`, newest first (may be empty)."""
        if self.secret_key is None:
            return ()
        parts = self.secret_key.get_secret_value().split(",")
        return tuple(SecretStr(part.strip()) for part in parts if part.strip())

    def store_redis(self, url: str) -> RedisSettings:
        """`RedisSettings` for the session store at `url` with these timeouts."""
        return RedisSettings.from_dsn(
            url,
            connect_timeout=self.redis_connect_timeout,
            socket_timeout=self.redis_socket_timeout,
        )

    def queue_redis(self, store_url: str) -> RedisSettings:
        """`RedisSettings` for the arq job queue.

        Raises:
            InvalidInput: the store is on a cluster and no queue URL is set.
        """
        url = self.queue_redis_url
        if url is None:
            if RedisSettings.from_dsn(store_url).mode == "cluster":
                raise InvalidInput(
                    "the store is on Redis Cluster, which arq cannot use: "
                    "set SESSIONSTORE_QUEUE_REDIS_URL to a standalone or Sentinel Redis"
                )
            url = store_url
        return self.store_redis(url)


def _flat_names() -> dict[str, tuple[str | None, str]]:
    names: dict[str, tuple[str | None, str]] = {}
    for name in Settings.model_fields:
        if name not in _GROUPS:
            names[name] = (None, name)
    for group, spec in _GROUPS.items():
        for variable, name in spec.variables().items():
            if variable in names:
                raise RuntimeError(f"two settings read SESSIONSTORE_{variable.upper()}")
            names[variable] = (group, name)
    return names


_FLAT_NAMES = _flat_names()

#: Every variable the reader accepts: ``SESSIONSTORE_IDLE_TIMEOUT`` to
#: ``("session", "idle_timeout")``; the group is None for `Settings`' own fields.
ENVIRONMENT_VARIABLES: Mapping[str, tuple[str | None, str]] = {
    PREFIX + variable.upper(): place for variable, place in _FLAT_NAMES.items()
}


class _GroupedEnvironment(PydanticBaseSettingsSource):
    """Reads every name of `ENVIRONMENT_VARIABLES` (any case) into its group."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """Unused: `__call__` reads the whole environment at once."""
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        """The set variables, as ``{"redis_url": ..., "session": {"idle_timeout": ...}}``."""
        environ = {name.lower(): value for name, value in os.environ.items()}
        values: dict[str, Any] = {}
        for variable, (group, name) in ENVIRONMENT_VARIABLES.items():
            text = environ.get(variable.lower())
            if text is None:
                continue
            if group is None:
                values[name] = text
            else:
                values.setdefault(group, {})[name] = text
        return values
