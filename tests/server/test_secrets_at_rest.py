"""No secret at rest: upstream passwords and tokens registered through the API, bearer
tokens, the cookie secret and the Fernet key are found in no Redis key or value and in no
log line of a fleet that used them (replicas at debug level with the access log on, a
worker at debug level)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import httpx
import pytest
import redis
from pydantic import SecretStr

from sessionstore.asgi import SessionCookie
from sessionstore.upstream import SecretBox
from tests.fleet.served import ServedFleet
from tests.polling import eventually
from tests.upstream.dovecot import Dovecot, dovecot_binary

pytestmark = [pytest.mark.fleet, pytest.mark.slow, pytest.mark.imap]

HEADER = "Mcp-Session-Id"
#: Upstream secrets: a password that needs IMAP quoting, an app token, a wrong password.
ALICE_PASSWORD = 'al1ce "quoted" pa55-' + secrets.token_hex(4)
BOB_TOKEN = "bob-app-token-" + secrets.token_urlsafe(18)
WRONG_PASSWORD = "wrong-pa55-" + secrets.token_hex(6)
#: Bob's token reaches the replicas and the worker as an environment variable.
BOB_ENV = "FLEET_IMAP_BOB_TOKEN"
SERVICE_TOKEN = "svc-" + secrets.token_urlsafe(18)
ADMIN_TOKEN = "adm-" + secrets.token_urlsafe(18)
HEALTH_TOKEN = "hlt-" + secrets.token_urlsafe(18)
COOKIE_SECRET = "ck-" + secrets.token_urlsafe(18)
FERNET_KEY = SecretBox.generate_key()


def secrets_to_find() -> dict[str, str]:
    """Every secret by name, with the IMAP-quoted form of the password that needs it."""
    return {
        "alice password": ALICE_PASSWORD,
        "alice password, IMAP-quoted": ALICE_PASSWORD.replace('"', '\\"'),
        "bob token": BOB_TOKEN,
        "wrong password": WRONG_PASSWORD,
        "service token": SERVICE_TOKEN,
        "admin token": ADMIN_TOKEN,
        "health token": HEALTH_TOKEN,
        "cookie secret": COOKIE_SECRET,
        "fernet key": FERNET_KEY,
    }


@pytest.fixture
def imap_server() -> Iterator[Dovecot]:
    if dovecot_binary() is None:
        pytest.skip("dovecot is not installed (apt-get install -y dovecot-imapd)")
    server = Dovecot({"alice": ALICE_PASSWORD, "bob": BOB_TOKEN})
    server.start()
    yield server
    server.remove()


@pytest.fixture
def fleet() -> Iterator[ServedFleet]:
    settings = {
        "SESSIONSTORE_KEY_PREFIX": "rest" + secrets.token_hex(3),
        "SESSIONSTORE_SHARDS": "4",
        "SESSIONSTORE_SERVICE_TOKENS": SERVICE_TOKEN,
        "SESSIONSTORE_ADMIN_TOKEN": ADMIN_TOKEN,
        "SESSIONSTORE_HEALTH_TOKEN": HEALTH_TOKEN,
        "SESSIONSTORE_COOKIE_SECRET": COOKIE_SECRET,
        "SESSIONSTORE_SECRET_KEY": FERNET_KEY,
        "SESSIONSTORE_UPSTREAM_ALLOWED_HOSTS": "127.0.0.1",
        "SESSIONSTORE_QUEUE_REDIS_URL": "",
        "SESSIONSTORE_HEARTBEAT_INTERVAL": "0.5",
        BOB_ENV: BOB_TOKEN,
    }
    served = ServedFleet(
        2,
        settings,
        workers=1,
        serve_args=("--log-level", "debug", "--access-log"),
        worker_args=("--verbose",),
    )
    served.start()
    yield served
    served.stop()


def everything_in_redis(url: str) -> bytes:
    """Every key and every value of every key in the database, as raw bytes."""
    client = redis.Redis.from_url(url)
    parts: list[bytes] = []
    try:
        for key in client.scan_iter(count=1000):
            kind = client.type(key).decode()
            value: object
            if kind == "string":
                value = client.get(key)
            elif kind == "hash":
                value = client.hgetall(key)
            elif kind == "list":
                value = client.lrange(key, 0, -1)
            elif kind == "set":
                value = client.smembers(key)
            elif kind == "zset":
                value = client.zrange(key, 0, -1, withscores=True)
            elif kind == "stream":
                value = client.xrange(key)
            else:
                value = kind
            parts.append(key + b" " + repr(value).encode())
            parts.append(b"".join(_raw(value)))
    finally:
        client.close()
    return b"\n".join(parts)


def _raw(value: object) -> Iterator[bytes]:
    """The bytes inside a reply, unescaped (repr would escape a quote or a backslash)."""
    if isinstance(value, bytes):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _raw(key)
            yield from _raw(item)
    elif isinstance(value, list | tuple | set):
        for item in value:
            yield from _raw(item)


async def test_no_secret_in_redis_or_in_any_log_line(
    fleet: ServedFleet, imap_server: Dovecot
) -> None:
    """Alice's client registers her password (verified) through A, an operator registers
    Bob's token by reference through B, a wrong password is refused, both upstreams are
    probed live through the other replica, tokens and a signed cookie are used; then no
    secret is in any key or value in Redis or any line any process logged."""
    a, b = (replica.url for replica in fleet.replicas)
    service = {"Authorization": f"Bearer {SERVICE_TOKEN}"}
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    account = {"host": "127.0.0.1", "port": imap_server.port, "tls": False}
    async with httpx.AsyncClient(timeout=60.0) as http:
        alice = await http.post(f"{a}/sessions", json={"user_id": "alice"}, headers=service)
        bob = await http.post(f"{b}/sessions", json={"user_id": "bob"}, headers=service)
        alice_id, bob_id = alice.json()["id"], bob.json()["id"]
        mine = {HEADER: alice_id}
        registered = [
            await http.put(
                f"{a}/sessions/{alice_id}/upstreams/mail?verify=true",
                json={**account, "username": "alice", "secret": ALICE_PASSWORD},
                headers=mine,
            ),
            await http.put(
                f"{b}/sessions/{bob_id}/upstreams/mail?verify=true",
                json={**account, "username": "bob", "credential_ref": f"env:{BOB_ENV}"},
                headers=admin,
            ),
        ]
        refused = await http.put(
            f"{b}/sessions/{alice_id}/upstreams/other?verify=true",
            json={**account, "username": "alice", "secret": WRONG_PASSWORD},
            headers=mine,
        )
        probes = [
            await http.get(f"{b}/sessions/{alice_id}/upstreams/mail/health?probe=true",
                           headers=mine),
            await http.get(f"{a}/sessions/{bob_id}/upstreams/mail/health?probe=true",
                           headers=admin),
        ]  # fmt: skip
        cookie = (
            SessionCookie(secret=SecretStr(COOKIE_SECRET)).set_header(alice_id).split(";", 1)[0]
        )
        by_cookie = await http.get(f"{a}/sessions/{alice_id}", headers={"Cookie": cookie})
        health = await http.get(f"{b}/session-health",
                                headers={"Authorization": f"Bearer {HEALTH_TOKEN}"})  # fmt: skip
        wrong_token = await http.get(
            f"{a}/users/alice/sessions", headers={"Authorization": f"Bearer {ADMIN_TOKEN}x"}
        )
    assert [r.status_code for r in registered] == [200, 200], [r.text for r in registered]
    assert refused.status_code == 422 and refused.json()["reason"] == "auth_failed"
    assert [p.json()["healthy"] for p in probes] == [True, True], [p.text for p in probes]
    assert by_cookie.status_code == 200 and health.status_code in (200, 503)
    assert wrong_token.status_code == 401

    async def worker_has_beaten() -> bool:
        return fleet.workers[0].log_path.stat().st_size > 0

    await eventually(worker_has_beaten, timeout=30)
    stored = everything_in_redis(fleet.redis.url)
    for child in [*fleet.replicas, *fleet.workers]:
        child.terminate()  # their shutdown lines are scanned too
    logs = {child.name: child.log_path.read_bytes() for child in [*fleet.replicas, *fleet.workers]}
    assert b"upstream mail registered" in logs["replica-1"], "the logs were at debug level"
    assert b'"GET /session-health' in logs["replica-2"], "the access log was on"
    assert b"upstreams" in stored and b"fernet" in stored.lower(), "the records were scanned"
    found = [
        f"{name} in {where}"
        for name, secret in secrets_to_find().items()
        for where, text in [("redis", stored), *logs.items()]
        if secret.encode() in text
    ]
    assert found == []
