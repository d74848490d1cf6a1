"""``sessionstore serve --access-log`` as a real process: its log lines show session ids
by their first characters only, and no query value, header or cookie that could be a
credential."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import httpx
import pytest

from sessionstore import new_session_id
from sessionstore.server._access_log import redact_target
from sessionstore.testing import ChildProcess, free_port, wait_http_ready, wait_until

SECRET = "hunter2-f4a9c1d0e7"


@pytest.mark.slow
def test_access_log_cuts_session_ids_and_query_secrets(
    redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    """Requests naming a session id in the path, the session header and a cookie, with a
    token in the query: the access log has a line per request, the id's first characters
    and the numeric query value, never the whole id or the secret."""
    port = free_port()
    server = ChildProcess(
        "replica",
        [sys.executable, "-m", "sessionstore", "serve", "--port", str(port), "--access-log"],
        log_path=tmp_path / "replica.log",
        env={
            **os.environ,
            "SESSIONSTORE_REDIS_URL": redis_url,
            "SESSIONSTORE_KEY_PREFIX": key_prefix,
            "SESSIONSTORE_ADMIN_TOKEN": "admin-t0ken-for-the-test",
        },
        url=f"http://127.0.0.1:{port}",
    ).start()
    session_id = new_session_id(3)
    try:
        wait_http_ready(server, timeout=60)
        with httpx.Client(base_url=server.url, timeout=10) as http:
            http.get(f"/sessions/{session_id}", params={"token": SECRET, "limit": 5})
            http.get(
                "/session",
                headers={"Mcp-Session-Id": session_id, "Cookie": f"sessionstore={SECRET}"},
            )
        wait_until(lambda: server.log().count("GET /session") >= 2, "access lines", timeout=30)
    finally:
        server.stop()
    log = server.log()
    assert f'"GET /sessions/{session_id[:6]}...?token=...&limit=5 HTTP/1.1"' in log, log
    assert session_id not in log and session_id[6:] not in log
    assert SECRET not in log


def test_redact_target_keeps_what_is_not_secret() -> None:
    """Paths without ids and numeric query values pass unchanged; an id anywhere in the
    path is cut; names that only look like ids (too short or too long) are left alone."""
    sid = "12.ABCDEFGHIJKLMNOPQRSTUVWX"
    assert redact_target("/healthz") == "/healthz"
    assert redact_target("/breakers/demo:flaky?events=0") == "/breakers/demo:flaky?events=0"
    assert redact_target(f"/sessions/{sid}/upstreams/mail") == "/sessions/12.ABC.../upstreams/mail"
    assert redact_target(f"/sessions/{sid}?x={sid}") == "/sessions/12.ABC...?x=..."
    assert redact_target("/users/a.b/sessions") == "/users/a.b/sessions"
    assert redact_target(f"/x/{sid}Y") == f"/x/{sid}Y"
