"""Upstream credentials: never in Redis in plaintext.

Two ways to keep a secret out of Redis, both ending in a `StoredCredential`:

- a reference (``env:IMAP_PASSWORD_ALICE``, ``file:alice-imap``) that a
  `CredentialProvider` resolves in the process that connects: the secret
  never reaches Redis at all;
- a Fernet token: the secret encrypted with a key from settings
  (``SESSIONSTORE_SECRET_KEY``). Several comma-separated keys, newest first,
  allow rotation: the newest encrypts, all decrypt (`cryptography`'s
  MultiFernet), and `SecretBox.rotate` re-encrypts a token with the newest.

Secrets travel as `pydantic.SecretStr`, whose repr is masked, so a stray log
line or traceback shows ``**********``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import SecretStr, ValidationError

from ..exceptions import InvalidInput, UpstreamRejected
from ._spec import StoredCredential


@runtime_checkable
class CredentialProvider(Protocol):
    """Resolves ``<scheme>:<name>`` references of one scheme to secrets.

    .. versionadded:: 0.1
    """

    #: The reference scheme this provider serves (``env``, ``file``...).
    scheme: str

    async def resolve(self, name: str) -> SecretStr | None:
        """The secret called `name`, or None if there is none."""
        ...


class EnvCredentials:
    """``env:<NAME>``: the secret is an environment variable of the connecting process.

    The mapping is passed in (usually ``os.environ``, at the edge), so library
    code never reads the environment on its own.

    .. versionadded:: 0.1
    """

    scheme = "env"

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    async def resolve(self, name: str) -> SecretStr | None:
        """The variable's value, or None when it is unset or empty."""
        value = self._environ.get(name)
        return SecretStr(value) if value else None


class FileCredentials:
    """``file:<name>``: the secret is a file in one directory (Docker/Kubernetes secrets).

    One trailing newline is dropped. Names that would leave the directory
    (``..``, absolute paths) resolve to nothing.

    .. versionadded:: 0.1
    """

    scheme = "file"

    def __init__(self, directory: str | Path) -> None:
        self._directory = Path(directory).resolve()

    async def resolve(self, name: str) -> SecretStr | None:
        """The file's content, or None if it is missing or outside the directory."""
        path = (self._directory / name).resolve()
        if path.parent != self._directory or not path.is_file():
            return None
        text = await asyncio.to_thread(path.read_text, "utf-8")
        return SecretStr(text.removesuffix("\n").removesuffix("\r"))


class SecretBox:
    """Encrypts secrets with Fernet keys from settings; several keys allow rotation.

    Args:
        keys: Fernet keys (urlsafe base64 of 32 bytes), newest first.

    Raises:
        InvalidInput: no key, or a key that is not a Fernet key.

    .. versionadded:: 0.1
    """

    def __init__(self, keys: Sequence[SecretStr | str]) -> None:
        raw = [k.get_secret_value() if isinstance(k, SecretStr) else k for k in keys]
        if not raw:
            raise InvalidInput("a SecretBox needs at least one key (SESSIONSTORE_SECRET_KEY)")
        try:
            self._fernet = MultiFernet([Fernet(key) for key in raw])
        except (ValueError, TypeError):
            # The message names no key: a bad key is still a secret.
            raise InvalidInput(
                "SESSIONSTORE_SECRET_KEY holds a value that is not a Fernet key "
                "(make one with SecretBox.generate_key())"
            ) from None

    @staticmethod
    def generate_key() -> str:
        """A new random Fernet key."""
        return Fernet.generate_key().decode("ascii")

    def encrypt(self, secret: SecretStr) -> str:
        """A token for `secret`, encrypted with the newest key."""
        return self._fernet.encrypt(secret.get_secret_value().encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> SecretStr | None:
        """The secret in `token`, or None if no key opens it."""
        try:
            return SecretStr(self._fernet.decrypt(token.encode("ascii")).decode("utf-8"))
        except (InvalidToken, UnicodeError):
            return None

    def rotate(self, token: str) -> str:
        """`token` re-encrypted with the newest key.

        Raises:
            InvalidInput: no key opens the token.
        """
        try:
            return self._fernet.rotate(token.encode("ascii")).decode("ascii")
        except (InvalidToken, UnicodeError):
            raise InvalidInput("no configured key opens this credential token") from None


class Credentials:
    """Seals secrets for the connection record and opens stored credentials.

    Args:
        providers: resolvers for references, one per scheme.
        box: encrypts plaintext secrets; without one, only references are accepted.

    .. versionadded:: 0.1
    """

    def __init__(
        self, *, providers: Iterable[CredentialProvider] = (), box: SecretBox | None = None
    ) -> None:
        self._providers = {provider.scheme: provider for provider in providers}
        self._box = box

    @property
    def schemes(self) -> tuple[str, ...]:
        """The reference schemes a credential ref may use here (``env``, ``file``...), sorted."""
        return tuple(sorted(self._providers))

    def seal(self, *, secret: SecretStr | None = None, ref: str | None = None) -> StoredCredential:
        """What to store for a credential: the reference, or the encrypted secret.

        Raises:
            InvalidInput: both or neither given; a reference with no provider for
                its scheme; a secret but no key to encrypt it (plaintext is refused).
        """
        if (secret is None) == (ref is None):
            raise InvalidInput("give either a secret or a credential ref")
        if ref is not None:
            try:
                stored = StoredCredential(ref=ref)
            except ValidationError:
                raise InvalidInput(
                    "a credential ref is <scheme>:<name>, e.g. env:IMAP_PASSWORD"
                ) from None
            if stored.scheme not in self._providers:
                raise InvalidInput(f"no credential provider for {stored.scheme!r} references")
            return stored
        if not isinstance(secret, SecretStr):
            raise InvalidInput("pass secrets as pydantic.SecretStr, so they are never logged")
        if self._box is None:
            raise InvalidInput(
                "no SESSIONSTORE_SECRET_KEY: refusing to store a secret; "
                "set a key or pass a credential ref (env:NAME, file:NAME)"
            )
        return StoredCredential(fernet=self._box.encrypt(secret))

    def seal_for(
        self, connector: object, *, secret: SecretStr | None = None, ref: str | None = None
    ) -> StoredCredential | None:
        """`seal`, except that nothing is stored when neither is given and the
        connector's upstreams may have no secret (``connector.secret_optional``: MCP)."""
        if secret is None and ref is None and getattr(connector, "secret_optional", False):
            return None
        return self.seal(secret=secret, ref=ref)

    async def open_stored(
        self, stored: StoredCredential | None, *, upstream: str
    ) -> SecretStr | None:
        """`open`, or None for an upstream registered without a credential."""
        return None if stored is None else await self.open(stored, upstream=upstream)

    async def open(self, stored: StoredCredential, *, upstream: str) -> SecretStr:
        """The secret behind `stored`.

        Raises:
            UpstreamRejected: reason ``credential_unavailable``: the reference
                resolves to nothing or no key opens the token. Not retried.
        """
        secret: SecretStr | None = None
        if stored.ref is not None:
            scheme, _, name = stored.ref.partition(":")
            provider = self._providers.get(scheme)
            secret = await provider.resolve(name) if provider else None
            what = f"credential {stored.ref}"
        else:
            secret = self._box.decrypt(stored.fernet or "") if self._box else None
            what = "encrypted credential (no configured key opens it)"
        if secret is None:
            raise UpstreamRejected(
                upstream, f"{what} is unavailable", reason="credential_unavailable"
            )
        return secret
