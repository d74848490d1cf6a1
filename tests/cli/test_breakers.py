"""``sessionstore breakers`` against a real Redis: output, audit, exit codes."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from sessionstore.cli import app
from sessionstore.testing import free_port

NAME = "imap:imap.mail.me.com:993"


@pytest.fixture
def cli(backend_url: str, key_prefix: str, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """A runner whose environment points the command at the test's Redis and prefix."""
    monkeypatch.setenv("SESSIONSTORE_REDIS_URL", backend_url)
    monkeypatch.setenv("SESSIONSTORE_KEY_PREFIX", key_prefix)
    return CliRunner()


def run(cli: CliRunner, *args: str) -> tuple[int, str]:
    result = cli.invoke(app, ["breakers", *args])
    return result.exit_code, result.output


def test_open_show_close_reset_round_trip(cli: CliRunner) -> None:
    """open isolates with actor and reason; show prints them and the audit; close and
    reset follow; list --json shows the breaker; every step exits 0."""
    code, out = run(cli, "open", NAME, "--reason", "dovecot upgrade", "--actor", "alice")
    assert code == 0 and "forced_open" in out and "alice" in out
    code, out = run(cli, "show", NAME, "--json")
    assert code == 0
    shown = json.loads(out)
    assert shown["status"]["state"] == "forced_open"
    assert (shown["status"]["actor"], shown["status"]["reason"]) == ("alice", "dovecot upgrade")
    assert shown["audit"][0]["action"] == "force_open"
    assert shown["events"][0]["fields"]["to"] == "forced_open"
    code, out = run(cli, "show", NAME)
    assert code == 0 and "dovecot upgrade" in out and "force_open" in out
    code, out = run(cli, "close", NAME, "--reason", "false alarm", "--json")
    assert code == 0 and json.loads(out)["state"] == "forced_closed"
    assert json.loads(out)["actor"].startswith("cli:")
    code, out = run(cli, "reset", NAME)
    assert code == 0 and "closed" in out
    code, out = run(cli, "list", "--json")
    listed = json.loads(out)
    assert code == 0 and [(b["name"], b["state"], b["gen"]) for b in listed] == [
        (NAME, "closed", 3)
    ]
    code, out = run(cli, "list")
    assert code == 0 and "breaker" in out


def test_unknown_breaker_exits_1(cli: CliRunner) -> None:
    """show of a breaker Redis knows nothing about: exit 1 with a message."""
    code, out = run(cli, "show", "never:used")
    assert code == 1 and "no breaker named never:used" in out


@pytest.mark.parametrize(
    "args",
    [
        ("show", "bad name"),
        ("open", "x{y}", "--reason", "r"),
        ("open", NAME, "--reason", "  "),
        ("close", NAME),  # --reason is required
        ("open", NAME, "--reason", "r", "--actor", "a\nb"),
    ],
)
def test_bad_usage_exits_2_and_changes_nothing(cli: CliRunner, args: tuple[str, ...]) -> None:
    """Bad names, empty or missing reasons and control characters: exit 2, no breaker made."""
    code, _ = run(cli, *args)
    assert code == 2
    code, out = run(cli, "list", "--json")
    assert code == 0 and json.loads(out) == []


def test_unreachable_redis_exits_3(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing listens at the URL: a fast, clear failure with exit code 3."""
    monkeypatch.setenv("SESSIONSTORE_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    monkeypatch.setenv("SESSIONSTORE_REDIS_CONNECT_TIMEOUT", "0.3")
    result = CliRunner().invoke(app, ["breakers", "list"])
    assert result.exit_code == 3 and "Redis unavailable" in result.output
