"""Forwarded headers, with ``sessionstore serve`` as a real process: ``X-Forwarded-For`` is
believed only from the configured load balancers (``SESSIONSTORE_TRUSTED_PROXIES``), so the
access log and the breaker-control log line name the address the server can vouch for."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import httpx
import pytest

from sessionstore.testing import ChildProcess, free_port, wait_http_ready, wait_until

FORGED = "203.0.113.66"
ADMIN = "admin-t0ken-for-the-test"


@pytest.mark.slow
@pytest.mark.parametrize(("trusted", "named"), [("", "127.0.0.1"), ("127.0.0.1", FORGED)])
def test_forwarded_for_is_believed_only_from_configured_proxies(
    redis_url: str, key_prefix: str, tmp_path: Path, trusted: str, named: str
) -> None:
    """A breaker forced open with ``X-Forwarded-For: 203.0.113.66``: with no trusted proxy
    (the default) both log lines name the real peer, 127.0.0.1, and the forged address
    appears nowhere; with the loopback configured as the load balancer they name the
    forwarded client."""
    port = free_port()
    server = ChildProcess(
        "replica",
        [sys.executable, "-m", "sessionstore", "serve", "--port", str(port), "--access-log"],
        log_path=tmp_path / "replica.log",
        env={
            **os.environ,
            "SESSIONSTORE_REDIS_URL": redis_url,
            "SESSIONSTORE_KEY_PREFIX": key_prefix,
            "SESSIONSTORE_ADMIN_TOKEN": ADMIN,
            "SESSIONSTORE_TRUSTED_PROXIES": trusted,
        },
        url=f"http://127.0.0.1:{port}",
    ).start()
    try:
        wait_http_ready(server, timeout=60)
        answer = httpx.post(
            f"{server.url}/breakers/demo:forged/force-open",
            json={"actor": "alice", "reason": "forwarded-header test"},
            headers={"Authorization": f"Bearer {ADMIN}", "X-Forwarded-For": FORGED},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        wait_until(lambda: "force-open HTTP" in server.log(), "the access line", timeout=30)
    finally:
        server.stop()
    log = server.log()
    assert f"force_open by 'alice' from {named} " in log, log
    assert f"{named}:" in log.split("force-open HTTP")[0].rsplit("\n", 1)[-1], log
    if named != FORGED:
        assert FORGED not in log
