"""`RedisSettings`: where a Redis is and how long to wait for it."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal
from urllib.parse import parse_qs, unquote, urlparse

from pydantic import BaseModel, ConfigDict, SecretStr

from ..exceptions import InvalidInput

#: Connecting must fail fast when Redis is down.
DEFAULT_CONNECT_TIMEOUT = timedelta(seconds=1)
#: A command that gets no answer in this time fails with a backend error.
DEFAULT_SOCKET_TIMEOUT = timedelta(seconds=2)

RedisMode = Literal["standalone", "sentinel", "cluster"]

_SCHEMES: dict[str, RedisMode] = {
    "redis": "standalone",
    "rediss": "standalone",
    "unix": "standalone",
    "redis+sentinel": "sentinel",
    "rediss+sentinel": "sentinel",
    "redis+cluster": "cluster",
    "rediss+cluster": "cluster",
}


class RedisSettings(BaseModel):
    """Where a Redis is and how long to wait for it.

    Build it with `RedisSettings.from_dsn`. Accepted forms::

        redis://[user:password@]host:port/db        standalone
        rediss://...                                 standalone over TLS
        unix:///path/to/redis.sock?db=0              standalone over a socket
        redis+sentinel://[user:pw@]h1:p1,h2:p2/mymaster?db=0
        redis+cluster://[user:pw@]h1:p1,h2:p2        Redis Cluster

    .. versionadded:: 0.1
    """

    model_config = ConfigDict(frozen=True)

    mode: RedisMode = "standalone"
    hosts: tuple[tuple[str, int], ...] = (("127.0.0.1", 6379),)
    unix_socket_path: str | None = None
    database: int = 0
    username: str | None = None
    password: SecretStr | None = None
    tls: bool = False
    sentinel_master: str = "mymaster"
    connect_timeout: timedelta = DEFAULT_CONNECT_TIMEOUT
    socket_timeout: timedelta = DEFAULT_SOCKET_TIMEOUT
    #: Pooled connections. A standalone or Sentinel client from `create_client` keeps
    #: one more, shared by the store's hot-path calls (`sessionstore._multiplex`), on
    #: which at most this many calls wait for replies at once.
    max_connections: int = 64

    @classmethod
    def from_dsn(cls, dsn: str, **overrides: object) -> RedisSettings:
        """Parse a Redis URL into settings; see the class docstring for the forms.

        Raises:
            InvalidInput: the URL has an unknown scheme or a bad host list.
        """
        url = urlparse(dsn)
        mode = _SCHEMES.get(url.scheme)
        if mode is None:
            raise InvalidInput(f"unsupported Redis URL scheme {url.scheme!r}")
        query = parse_qs(url.query)
        database = int(query["db"][0]) if "db" in query else 0
        fields: dict[str, object] = {
            "mode": mode,
            "tls": url.scheme.startswith("rediss"),
            "username": unquote(url.username) if url.username else None,
            "password": SecretStr(unquote(url.password)) if url.password else None,
        }
        if url.scheme == "unix":
            fields["unix_socket_path"] = url.path
        else:
            fields["hosts"] = _parse_hosts(url.netloc.rpartition("@")[2])
            path = url.path.strip("/")
            if mode == "sentinel":
                fields["sentinel_master"] = path or "mymaster"
            elif path:
                database = int(path)
        fields["database"] = database
        fields.update(overrides)
        return cls.model_validate(fields)

    def to_dsn(self) -> str:
        """The URL form of these settings, with the password masked.

        .. versionadded:: 0.1
        """
        scheme = {"standalone": "redis", "sentinel": "redis+sentinel", "cluster": "redis+cluster"}[
            self.mode
        ]
        if self.tls:
            scheme = scheme.replace("redis", "rediss", 1)
        auth = ""
        if self.username or self.password:
            auth = f"{self.username or ''}{':***' if self.password else ''}@"
        if self.unix_socket_path:
            return f"unix://{auth}{self.unix_socket_path}?db={self.database}"
        hosts = ",".join(f"{h}:{p}" for h, p in self.hosts)
        tail = self.sentinel_master if self.mode == "sentinel" else str(self.database)
        return f"{scheme}://{auth}{hosts}/{tail}"


def _parse_hosts(netloc: str) -> tuple[tuple[str, int], ...]:
    hosts = []
    for part in netloc.split(","):
        host, _, port = part.rpartition(":")
        if not host:
            host, port = part, "6379"
        if not port.isdigit():
            raise InvalidInput(f"bad port in Redis URL host {part!r}")
        hosts.append((host.strip("[]") or "127.0.0.1", int(port)))
    return tuple(hosts)
