"""What the store-facing commands share: settings, the store, exit codes, output.

Exit codes (see ``cli/__init__.py``): 0 success, 1 operation failed (not
found, refused), 2 bad usage or configuration, 3 Redis unavailable.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError

from .._environment import Settings
from .._redis import create_client
from ..exceptions import BackendUnavailable, InvalidInput, SessionStoreError
from ..store import SessionStore

T = TypeVar("T")

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    """Print `message` to stderr and exit with `code`."""
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


def load_settings() -> Settings:
    """`Settings` from the environment; exit 2 with the reason when they are invalid."""
    try:
        return Settings()
    except ValidationError as exc:
        fail(f"bad SESSIONSTORE_* setting: {exc}", EXIT_USAGE)


def store_url(settings: Settings) -> str:
    """The store's Redis URL; exit 2 when it is not set."""
    if settings.redis_url is None:
        fail(
            "SESSIONSTORE_REDIS_URL is not set (`sessionstore dev` prints one to export)",
            EXIT_USAGE,
        )
    return settings.redis_url


@asynccontextmanager
async def open_store(settings: Settings) -> AsyncIterator[SessionStore]:
    """A store on its own client, closed on exit."""
    client = create_client(settings.store_redis(store_url(settings)))
    try:
        yield SessionStore(client, settings.session)
    finally:
        await client.aclose()


def run(action: Callable[[], Awaitable[T]]) -> T:
    """Run an async command body; map store errors to the documented exit codes."""
    try:
        return asyncio.run(_call(action))
    except BackendUnavailable as exc:
        fail(str(exc), EXIT_UNAVAILABLE)
    except InvalidInput as exc:
        fail(str(exc), EXIT_USAGE)
    except ValidationError as exc:  # the parts' settings, derived in the body, are validated
        fail(f"bad SESSIONSTORE_* setting: {exc}", EXIT_USAGE)
    except SessionStoreError as exc:
        fail(str(exc), EXIT_FAILED)


async def _call(action: Callable[[], Awaitable[T]]) -> T:
    return await action()


def print_json(value: Any) -> None:
    """Print `value` as indented JSON (datetimes and other objects as strings)."""
    typer.echo(json.dumps(value, indent=2, default=str, sort_keys=True))
