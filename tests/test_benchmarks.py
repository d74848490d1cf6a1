"""The benchmarks that say where the targets stand (docs/performance.md) still run: each
is started as its README line starts it, on a private Redis of its own, with small
sizes, and prints every row its figures are read from. Their figures are not checked
(timings are never asserted); the round trips per operation are exact, so they are."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, *args: str) -> str:
    """The output of ``python benchmarks/<script> <args>``, which must exit 0."""
    env = {k: v for k, v in os.environ.items() if k != "SESSIONSTORE_REDIS_URL"}
    done = subprocess.run(
        [sys.executable, "-u", f"benchmarks/{script}", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _round_trips(output: str, concurrency: int) -> dict[tuple[str, str], str]:
    """(case, peer) -> the RT/op column of the rows printed for `concurrency`."""
    section = output.split(f"concurrency {concurrency} ")[1].split("\nconcurrency ")[0]
    rows = re.findall(r"^(.{30}) (.{13}) +\d+ +(\d+\.\d\d) ", section, re.MULTILINE)
    return {(case.strip(), peer.strip()): trips for case, peer, trips in rows}


def test_the_peers_benchmark_prints_every_case_beside_its_peers() -> None:
    """benchmarks/peers.py prints each case for each peer at both concurrencies, with
    the round trips each operation costs (a leased request that commits its changes
    is 2, as a plain read + write is), and the memory per session of both stores."""
    output = _run(
        "peers.py", "--ops", "40", "--rounds", "1", "--concurrency", "1", "32", "--sessions", "100"
    )
    at_one = _round_trips(output, 1)
    assert at_one[("read + write 1 attribute", "starsessions")] == "2.00"
    assert at_one[("read + write 1 attribute", "sessionstore")] == "2.00"
    assert at_one[("read + write 1 attribute", "redis-py")] == "2.00"
    assert at_one[("same, with a request lease", "sessionstore")] == "2.00"
    assert at_one[("same, with a request lease", "ss set_state")] == "3.00"
    assert at_one[("get", "sessionstore")] == "1.00"
    assert at_one[("set_state (1 attribute)", "sessionstore")] == "1.00"
    assert at_one[("track_request (begin+end)", "sessionstore")] == "2.00"
    assert at_one[("counter route (middleware)", "sessionstore")] == "2.00"
    assert at_one[("counter route (middleware)", "starsessions")] == "2.00"
    assert set(_round_trips(output, 32)) == set(at_one)
    for store in ("sessionstore", "starsessions"):
        for label in ("small", "10 x 50 B"):
            assert re.search(rf"^{store} {label}\s+\d+ B ", output, re.MULTILINE), output


def test_the_sweep_benchmark_prints_its_ratios() -> None:
    """benchmarks/sweep_cost.py sweeps both stores and prints the Redis time per expired
    session and the ratios of the larger store to the smaller."""
    output = _run(
        "sweep_cost.py", "--due", "200", "--repeats", "1", "--live", "500", "2000", "--shards", "4"
    )
    assert re.search(r"^ +500 live .*us per session", output, re.MULTILINE), output
    assert re.search(r"Redis CPU: median .*us per session", output), output
    for what in ("wall", "in Redis", "Redis CPU"):
        assert re.search(rf"^ratio 2,000 / 500 live, {what} \(medians\): \d", output, re.M), output
