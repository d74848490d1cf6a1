"""Credentials (refs, Fernet, rotation), specs, and the import boundary of the GPL extra."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from sessionstore import InvalidInput
from sessionstore.exceptions import UpstreamRejected
from sessionstore.upstream import (
    Credentials,
    EnvCredentials,
    FileCredentials,
    SecretBox,
    StoredCredential,
    UpstreamSpec,
)

SECRET = SecretStr("correct horse battery staple")


async def test_fernet_keys_rotate_newest_first() -> None:
    """A token made with the old key opens with [new, old]; rotate() re-encrypts it with new."""
    old, new = SecretBox.generate_key(), SecretBox.generate_key()
    token = SecretBox([old]).encrypt(SECRET)
    both = SecretBox([SecretStr(new), SecretStr(old)])
    opened = both.decrypt(token)
    assert opened is not None and opened.get_secret_value() == SECRET.get_secret_value()
    rotated = both.rotate(token)
    assert SecretBox([new]).decrypt(rotated) is not None
    assert SecretBox([old]).decrypt(rotated) is None
    assert SECRET.get_secret_value() not in token


def test_a_bad_key_is_refused_without_echoing_it() -> None:
    """A malformed key is bad input, and the message does not repeat it."""
    with pytest.raises(InvalidInput) as caught:
        SecretBox(["not-a-fernet-key-but-secret"])
    assert "not-a-fernet-key-but-secret" not in str(caught.value)
    with pytest.raises(InvalidInput, match="at least one key"):
        SecretBox([])


def test_plaintext_is_refused_without_a_key() -> None:
    """With no SESSIONSTORE_SECRET_KEY only references can be stored."""
    credentials = Credentials(providers=[EnvCredentials({})])
    with pytest.raises(InvalidInput, match="refusing to store a secret"):
        credentials.seal(secret=SECRET)
    with pytest.raises(InvalidInput, match="either a secret or"):
        credentials.seal()
    with pytest.raises(InvalidInput, match="no credential provider for 'vault'"):
        credentials.seal(ref="vault:alice")
    with pytest.raises(InvalidInput, match="<scheme>:<name>"):
        credentials.seal(ref="env:bad name")
    assert credentials.seal(ref="env:ALICE") == StoredCredential(ref="env:ALICE")


async def test_sealed_secrets_open_again_and_missing_ones_fail_fast(tmp_path: Path) -> None:
    """Fernet, env and file credentials resolve; a missing one is UpstreamRejected."""
    (tmp_path / "alice").write_text("from-a-file\n")
    credentials = Credentials(
        providers=[EnvCredentials({"ALICE": "from-env"}), FileCredentials(tmp_path)],
        box=SecretBox([SecretBox.generate_key()]),
    )
    sealed = credentials.seal(secret=SECRET)
    assert sealed.fernet is not None and sealed.ref is None
    opened = [
        await credentials.open(stored, upstream="mail")
        for stored in (
            sealed,
            StoredCredential(ref="env:ALICE"),
            StoredCredential(ref="file:alice"),
        )
    ]
    assert [s.get_secret_value() for s in opened] == [
        SECRET.get_secret_value(),
        "from-env",
        "from-a-file",
    ]
    for missing in ("env:BOB", "file:bob", "file:../alice"):
        with pytest.raises(UpstreamRejected) as caught:
            await credentials.open(StoredCredential(ref=missing), upstream="mail")
        assert caught.value.reason == "credential_unavailable"
    foreign = SecretBox([SecretBox.generate_key()]).encrypt(SECRET)
    with pytest.raises(UpstreamRejected, match="no configured key opens it"):
        await credentials.open(StoredCredential(fernet=foreign), upstream="mail")


def test_specs_refuse_injection_and_default_their_breaker() -> None:
    """CR/LF in a username, odd hosts and names are refused; breakers are per host:port."""
    spec = UpstreamSpec(name="mail", host="imap.mail.me.com", port=993, username="a@icloud.com")
    assert spec.breaker_name == "imap:imap.mail.me.com:993" and spec.tls
    for bad in (
        {"username": "alice\r\nA1 DELETE INBOX"},
        {"host": "imap.example.com/evil"},
        {"name": "mail box"},
        {"port": 0},
        {"kind": "IMAP"},
    ):
        with pytest.raises(ValidationError):
            UpstreamSpec.model_validate(spec.model_dump() | bad)
    with pytest.raises(ValidationError, match="either a ref or a fernet"):
        StoredCredential(ref="env:A", fernet="gAAAA")


def test_the_package_imports_without_aioimaplib() -> None:
    """aioimaplib (GPL-3.0) is only imported by sessionstore.upstream.imap, and the MCP
    SDK only by sessionstore.upstream.mcp: without both extras there is no connector."""
    code = textwrap.dedent(
        """
        import sys
        BLOCKED = ("aioimaplib", "mcp", "mcp_types", "httpx2")
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError("blocked for the test")
        sys.meta_path.insert(0, Block())
        import sessionstore, sessionstore.upstream, workers.reconnect
        from sessionstore.upstream import McpServers, UpstreamSettings, connectors_for
        assert connectors_for(UpstreamSettings()) == []
        assert "aioimaplib" not in sys.modules and "mcp" not in sys.modules
        try:
            import sessionstore.upstream.imap
        except ImportError:
            print("imap module needs the extra")
        try:
            import sessionstore.upstream.mcp
        except ImportError:
            print("mcp module needs the extra")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "imap module needs the extra" in done.stdout
    assert "mcp module needs the extra" in done.stdout


def test_plain_and_tls_connections_to_one_port_have_separate_breakers() -> None:
    """Sessions registered without TLS against a TLS port fail every call; their
    failures go to a breaker of their own, not to the one correct sessions share."""
    from sessionstore.upstream import UpstreamSpec

    tls = UpstreamSpec(name="mail", host="imap.example.com", port=993, username="a")
    plain = UpstreamSpec(name="mail", host="imap.example.com", port=993, username="b", tls=False)
    assert tls.breaker_name == "imap:imap.example.com:993"
    assert plain.breaker_name == "imap+plain:imap.example.com:993"
    named = UpstreamSpec(name="m", host="h", port=1, username="c", tls=False, breaker="shared")
    assert named.breaker_name == "shared"
