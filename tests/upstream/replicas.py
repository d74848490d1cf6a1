"""One reference-server replica in-process for the upstream route tests, and helpers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from sessionstore import SessionStore, Settings
from sessionstore.server import create_app
from sessionstore.server._state import STATE_KEY, ServerState
from sessionstore.upstream import SecretBox
from tests.serving import serving
from tests.upstream.conftest import ENV_PASSWORD_NAME, PASSWORD, fleet_settings
from tests.upstream.dovecot import Dovecot

ADMIN = "admin-t0ken"
HEALTH = "health-t0ken"
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}
HEALTH_AUTH = {"Authorization": f"Bearer {HEALTH}"}
SERVICE = "service-t0ken"
SERVICE_AUTH = {"Authorization": f"Bearer {SERVICE}"}
HEADER = "Mcp-Session-Id"
#: The password as IMAP quotes it on the LOGIN line (it holds a double quote).
QUOTED = PASSWORD.replace('"', '\\"')


@dataclass
class Replica:
    """A replica's HTTP client and its lifespan state (its pool, breakers...)."""

    http: httpx.AsyncClient
    state: ServerState


def replica_settings(
    store: SessionStore, redis_url: str, secret_key: str | None, **extra: Any
) -> Settings:
    """A replica with both tokens, the test's key, breakers that record each outcome inline,
    and upstreams limited to loopback."""
    fields: dict[str, Any] = {
        "admin_token": SecretStr(ADMIN),
        "health_token": SecretStr(HEALTH),
        "breaker_record_flush_interval": timedelta(0),
        "upstream_allowed_hosts": "127.0.0.1,localhost",
        **extra,
    }
    settings = fleet_settings(store, redis_url, secret_key or SecretBox.generate_key(), **fields)
    return settings if secret_key else settings.model_copy(update={"secret_key": None})


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Replica]:
    """One replica in-process; ``env:`` references resolve from a fake environment."""
    app = create_app(settings, environ={ENV_PASSWORD_NAME: PASSWORD})
    async with serving(app) as (http, lifespan):
        yield Replica(http, lifespan.state[STATE_KEY])


def body(server: Dovecot, **fields: Any) -> dict[str, Any]:
    """A registration of Dovecot's ``testuser`` over plain IMAP on loopback."""
    return {"host": "127.0.0.1", "port": server.port, "tls": False, "username": "testuser"} | fields


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)


def owner(session_id: str) -> dict[str, str]:
    return {HEADER: session_id}


def url(session_id: str, name: str = "mail", tail: str = "") -> str:
    return f"/sessions/{session_id}/upstreams/{name}{tail}"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """A ``/metrics`` text as (name, sorted labels) -> value."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
