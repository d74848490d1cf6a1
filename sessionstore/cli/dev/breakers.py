"""The circuit-breaker part of ``sessionstore dev``: trip a demo breaker, print how to look.

The replicas run with the demo route on (``SESSIONSTORE_DEMO_ROUTES``), so a
made-up upstream can be called through any of them under its breaker. Every
replica calls it once (so each follows the breaker), then failed calls
through the first replica trip it; the dev command waits until the last
replica's own view says open, then prints the lines to look at it and steer it.
A breaker an earlier run left open or forced open (the data dir's AOF keeps it)
is reset first, so every run starts from closed.
"""

from __future__ import annotations

import time

import httpx

from ... import KeySpace
from .fleet import DevFleet, RedisLines

UPSTREAM = "flaky"
#: The breaker the demo route guards the made-up upstream with.
NAME = f"demo:{UPSTREAM}"
#: Room on top of the staleness bound for the last replica to see the trip.
_SEE_MARGIN = 5.0


def _call(http: httpx.Client, base: str, outcome: str) -> httpx.Response:
    return http.post(f"{base}/demo/upstreams/{UPSTREAM}/call", json={"outcome": outcome})


def _local_state(http: httpx.Client, base: str) -> str | None:
    answer = http.get(f"{base}/breakers/{NAME}")
    answer.raise_for_status()
    local = answer.json()["local"]
    return None if local is None else str(local["state"])


def _start_closed(http: httpx.Client, base: str, admin_token: str) -> None:
    """Reset the demo breaker if an earlier run on the same data dir left it open or
    forced (its state comes back from the AOF); a fresh data dir has none, and a closed
    one is left alone, so nothing is written then."""
    answer = http.get(f"{base}/breakers/{NAME}")
    if answer.status_code == 404:
        return
    answer.raise_for_status()
    if answer.json()["breaker"]["state"] == "closed":
        return
    http.post(
        f"{base}/breakers/{NAME}/reset",
        headers={"Authorization": f"Bearer {admin_token}"},
        json={"actor": "sessionstore dev", "reason": "a new dev run starts from closed"},
    ).raise_for_status()


def trip_demo_breaker(fleet: DevFleet) -> int:
    """Trip the demo breaker by failed calls through the first replica; returns how many.

    Raises:
        RuntimeError: it did not open, or the last replica did not see it in time.
    """
    settings = fleet.settings.breaker
    first, last = fleet.replicas[0].url, fleet.replicas[-1].url
    # All failures after the replicas' one success each; batching lets a few more through.
    most = 2 * settings.minimum_calls + len(fleet.replicas) + 50
    with httpx.Client(timeout=5.0) as http:
        _start_closed(http, first, fleet.admin_token)
        for replica in fleet.replicas:
            _call(http, replica.url, "success").raise_for_status()
        failed = 0
        while (answer := _call(http, first, "failure")).status_code == 502:
            failed += 1
            if failed > most:
                raise RuntimeError(f"the demo breaker {NAME} did not open after {failed} failures")
        if answer.json().get("error") != "breaker_open":
            raise RuntimeError(f"unexpected answer from the demo route: {answer.text}")
        deadline = time.monotonic() + settings.staleness_bound.total_seconds() + _SEE_MARGIN
        while _local_state(http, last) != "open":
            if time.monotonic() > deadline:
                raise RuntimeError(f"{last} did not see the demo breaker open in time")
            time.sleep(0.05)
    return failed


def breaker_lines(fleet: DevFleet, failed: int, cli: RedisLines) -> list[str]:
    """The guide's breaker part: what happened and the exact lines to look and steer."""
    settings = fleet.settings
    keys = KeySpace(settings.session.key_prefix, settings.session.shards).breaker(NAME)
    first, last = fleet.replicas[0].url, fleet.replicas[-1].url
    opened = settings.breaker.open_duration.total_seconds()
    body = """'{"actor": "you", "reason": "trying the dev fleet"}'"""
    return [
        "A circuit breaker, shared by every replica through Redis: "
        f"{failed} calls to a made-up upstream",
        f"through {fleet.replicas[0].name} failed, so its breaker {NAME} opened, and "
        f"{fleet.replicas[-1].name} refuses calls",
        f"to it too. After {opened:g} s the next call anywhere is a half-open probe:",
        f"  curl -s {last}/breakers/{NAME}",
        f"  curl -s -X POST {last}/demo/upstreams/{UPSTREAM}/call "
        """-H 'content-type: application/json' -d '{"outcome": "success"}'""",
        "  sessionstore breakers list",
        f"  sessionstore breakers show {NAME}",
        *cli(f"HGETALL '{keys.state}'", f"XREVRANGE '{keys.events}' + - COUNT 5"),
        "Steer it across the fleet: over HTTP with the admin token, or with the CLI (Redis only):",
        f"  curl -s -X POST {first}/breakers/{NAME}/reset -H 'Authorization: Bearer "
        f"{fleet.admin_token}' -H 'content-type: application/json' -d {body}",
        f"  sessionstore breakers open {NAME} --reason 'trying the CLI'",
        *cli(f"XREVRANGE '{keys.audit}' + - COUNT 5"),
        "",
    ]
