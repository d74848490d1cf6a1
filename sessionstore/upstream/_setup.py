"""Building the upstream pieces from `Settings`, at the edge (server lifespan, worker start-up).

Library code never reads the environment: the caller passes ``os.environ``
for ``env:`` credential references.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from ._connector import Connector
from ._settings import UpstreamSettings
from .credentials import CredentialProvider, Credentials, EnvCredentials, FileCredentials, SecretBox

if TYPE_CHECKING:
    from pydantic import SecretStr


class CredentialSettings(Protocol):
    """What `credentials_for` reads of `Settings` (which imports this package)."""

    @property
    def upstream(self) -> UpstreamSettings:
        """The upstream settings (``credentials_dir``: where ``file:`` references are read)."""
        ...

    def secret_keys(self) -> tuple[SecretStr, ...]:
        """The Fernet keys, newest first."""
        ...


logger = logging.getLogger("sessionstore.upstream")


def connectors_for(settings: UpstreamSettings) -> list[Connector]:
    """The connectors this installation has: IMAP and MCP when their extras are installed.

    .. versionadded:: 0.1
    """
    found: list[Connector] = []
    try:
        from .imap import ImapConnector
    except ImportError:
        logger.info("aioimaplib is not installed: no IMAP connector (sessionstore[imap])")
    else:
        found.append(ImapConnector.from_settings(settings))
    try:
        from .mcp import McpConnector
    except ImportError:
        logger.info("the MCP SDK is not installed: no MCP connector (sessionstore[mcp])")
    else:
        found.append(McpConnector.from_settings(settings))
    return found


def credentials_for(settings: CredentialSettings, environ: Mapping[str, str]) -> Credentials:
    """``env:`` references from `environ`, ``file:`` references from
    ``SESSIONSTORE_UPSTREAM_CREDENTIALS_DIR``, Fernet with ``SESSIONSTORE_SECRET_KEY``.

    Raises:
        InvalidInput: a secret key that is not a Fernet key.

    .. versionadded:: 0.1
    """
    providers: list[CredentialProvider] = [EnvCredentials(environ)]
    if settings.upstream.credentials_dir:
        providers.append(FileCredentials(settings.upstream.credentials_dir))
    keys = settings.secret_keys()
    return Credentials(providers=providers, box=SecretBox(keys) if keys else None)
