"""scripts/test-servers installs, before the tests run, what would make tests skip."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _fake(bin_dir: Path, name: str, body: str = "exit 0") -> None:
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def test_docker_compose_is_installed_with_the_test_servers(tmp_path: Path) -> None:
    """On a machine that has the servers but no docker-compose, the script asks apt for
    docker-compose (run as root with a fake apt-get), so the compose-file tests run
    instead of being skipped."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    asked = tmp_path / "apt-get.args"
    for server in ("redis-server", "dovecot", "haproxy"):
        _fake(bin_dir, server)
    _fake(bin_dir, "id", "echo 0")
    _fake(bin_dir, "apt-get", f'echo "$@" >> {asked}')
    subprocess.run(
        ["/bin/bash", str(ROOT / "scripts" / "test-servers")],
        env={"PATH": str(bin_dir)},
        check=True,
        capture_output=True,
    )
    assert "docker-compose" in asked.read_text().split()
