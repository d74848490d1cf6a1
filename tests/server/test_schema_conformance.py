"""The API conforms to its own OpenAPI schema: schemathesis against a live `sessionstore serve`.

Every check (``--checks all``), every phase (examples, coverage, fuzzing and the
stateful phase that follows the links between operations), once anonymously and
once with the admin bearer token, against a real server process on a real Redis.
The budget is bounded (a fixed number of examples per operation, a fixed seed so
a failure reproduces); ``tests/server/schemathesis.toml`` says which statuses
valid requests may meet and why.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from tests.fleet.served import Replica

pytestmark = [pytest.mark.slow, pytest.mark.standalone]

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
CONFIG = Path(__file__).with_name("schemathesis.toml")
ADMIN = "schema-admin-t0ken"
#: Test cases per operation and phase: enough to reach every documented answer,
#: small enough for about a minute per run on a shared CI machine.
EXAMPLES = 20


@pytest.fixture
def served(redis_url: str, key_prefix: str, tmp_path: Path) -> Iterator[Replica]:
    env = {
        **os.environ,
        "SESSIONSTORE_REDIS_URL": redis_url,
        "SESSIONSTORE_KEY_PREFIX": key_prefix,
        "SESSIONSTORE_ADMIN_TOKEN": ADMIN,
        "SESSIONSTORE_HEALTH_TOKEN": ADMIN,
        "SESSIONSTORE_SECRET_KEY": Fernet.generate_key().decode(),
        # The schema's answers are under test, not a hung Redis: on a loaded test machine
        # a command may wait longer than the default 0.75 s budget for a core, and the
        # outage latch it trips would answer the next requests with 503.
        "SESSIONSTORE_REQUEST_REDIS_TIMEOUT": "10",
    }
    replica = Replica("api", env, tmp_path).start()
    try:
        replica.wait_ready()
        yield replica
    finally:
        replica.terminate()


@pytest.mark.parametrize("credentials", [False, True], ids=["anonymous", "admin"])
def test_the_api_conforms_to_its_schema(served: Replica, credentials: bool, tmp_path: Path) -> None:
    """schemathesis finds no failure and no error: every answer is documented, every error
    body is the problem shape, schema-valid requests are taken, invalid ones refused with
    4xx, wrong methods get 405 with the path's Allow, and nothing answers 500."""
    reports = tmp_path / "reports"
    command = [
        str(SCHEMATHESIS),
        "--config-file", str(CONFIG),
        "run", f"{served.url}/openapi.json",
        "--checks", "all",
        "--phases", "examples,coverage,fuzzing,stateful",
        "--max-examples", str(EXAMPLES),
        "--seed", "1",
        "--workers", "1",
        "--generation-database", "none",
        # Credentials are given below, not generated: a fuzzed token is no test of the API.
        "--generation-with-security-parameters", "false",
        "--no-color",
        "--report", "json",
        "--report-dir", str(reports),
    ]  # fmt: skip
    if credentials:
        command += ["-H", f"Authorization: Bearer {ADMIN}"]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=240, check=False, cwd=tmp_path
    )
    (path,) = reports.glob("*.json")
    report = json.loads(path.read_text())
    # The run's own account of each failure: how to reproduce it, what it got.
    told = result.stdout[result.stdout.find("FAILURES") :][:12000]
    assert (report["failures"], report["errors"]) == ([], []), told
    assert result.returncode == 0, told
    assert report["test_cases"]["generated"] > 500, "too few test cases to mean anything"
    assert "Traceback" not in served.log(), served.log()
