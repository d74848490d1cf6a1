"""The reference server's upstream routes against a real Redis and a real Dovecot.

Registration by the session's own client (an encrypted secret) and by an
operator (an ``env:`` reference), live and recorded health, a wrong password,
a kicked and a stopped server, removal, auth, and the proofs that no secret
reaches Redis, an answer or a log.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from pydantic import SecretStr

from sessionstore import RedisClient, SessionStore, UpstreamNotFound
from sessionstore.breaker import BreakerAdmin
from sessionstore.upstream import SecretBox
from tests.polling import eventually
from tests.upstream.conftest import ENV_PASSWORD_NAME, PASSWORD
from tests.upstream.dovecot import Dovecot
from tests.upstream.replicas import (
    ADMIN_AUTH,
    HEALTH_AUTH,
    QUOTED,
    SERVICE,
    SERVICE_AUTH,
    Replica,
    body,
    owner,
    replica_settings,
    running,
    url,
    when,
)

pytestmark = pytest.mark.imap


async def everything_in_redis(redis: RedisClient, prefix: str) -> str:
    """Every key and value under the prefix, as one text (to search for a secret)."""
    parts = []
    async for key in redis.scan_iter(match=f"{prefix}:*"):
        kind = await redis.type(key)
        if kind == "hash":
            value: Any = await redis.hgetall(key)
        elif kind == "string":
            value = await redis.get(key)
        elif kind == "stream":
            value = await redis.xrange(key)
        elif kind == "zset":
            value = await redis.zrange(key, 0, -1, withscores=True)
        else:
            value = kind
        parts.append(f"{key} {value}")
    return "\n".join(parts)


@pytest.mark.standalone
async def test_an_operator_registers_an_env_reference_and_reads_health(
    replica: Replica, dovecot: Dovecot, store: SessionStore
) -> None:
    """Admin token + ``env:`` reference: stored as the reference; a live probe is healthy with
    a response time, which the record keeps; the recorded health says the same on read."""
    session = await store.create()
    ref = f"env:{ENV_PASSWORD_NAME}"
    put = await replica.http.put(
        url(session.id), json=body(dovecot, credential_ref=ref), headers=ADMIN_AUTH
    )
    assert put.status_code == 200, put.text
    made = put.json()
    assert made["credential"] == {"kind": "ref", "ref": ref}
    assert (made["state"], made["breaker"]) == ("closed", f"imap+plain:127.0.0.1:{dovecot.port}")
    probed = await replica.http.get(url(session.id, tail="/health?probe=true"), headers=ADMIN_AUTH)
    assert probed.status_code == 200, probed.text
    live = probed.json()
    assert live["healthy"] is True and live["error"] is None and live["source"] == "probe"
    assert (live["host"], live["port"], live["state"]) == ("127.0.0.1", dovecot.port, "connected")
    assert live["response_time_ms"] > 0 and live["last_activity"] is not None
    assert live["connection_age_s"] is not None
    recorded = (await replica.http.get(url(session.id, tail="/health"), headers=ADMIN_AUTH)).json()
    assert recorded["source"] == "record" and recorded["healthy"] is True
    assert recorded["response_time_ms"] == round(live["response_time_ms"], 3)
    assert recorded["breaker"]["effective_state"] == "closed"
    raw = await store.redis.hget(store.keys.session(session.id).upstreams, "mail")
    assert ref in raw and PASSWORD not in raw


@pytest.mark.standalone
async def test_the_sessions_own_client_registers_a_secret_that_stays_secret(
    replica: Replica,
    dovecot: Dovecot,
    store: SessionStore,
    secret_key: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The session header + a secret, verified first: stored only as a Fernet token of the
    configured key; the secret is in no answer, no Redis key and no log line (DEBUG on,
    aioimaplib's included, for a password that needs IMAP quoting)."""
    caplog.set_level(logging.DEBUG)
    session = await store.create()
    put = await replica.http.put(
        url(session.id) + "?verify=true",
        json=body(dovecot, secret=PASSWORD),
        headers=owner(session.id),
    )
    assert put.status_code == 200, put.text
    made = put.json()
    assert made["credential"] == {"kind": "encrypted", "ref": None}
    assert made["state"] == "connected" and made["response_time_ms"] > 0
    probed = await replica.http.get(
        url(session.id, tail="/health?probe=true"), headers=owner(session.id)
    )
    assert probed.json()["healthy"] is True
    record = await replica.state.upstreams.pool.records.get(session.id, "mail")
    assert record is not None and record.credential.fernet is not None
    opened = SecretBox([secret_key]).decrypt(record.credential.fernet)
    assert opened is not None and opened.get_secret_value() == PASSWORD
    stored = await everything_in_redis(store.redis, store.settings.key_prefix)
    assert record.credential.fernet in stored, "the search saw the record"
    for text in (put.text, probed.text, stored, caplog.text):
        assert PASSWORD not in text and QUOTED not in text
    assert record.credential.fernet not in put.text + probed.text
    assert "upstream mail registered by owner" in caplog.text
    ours = [r.getMessage() for r in caplog.records if r.name.startswith(("sessionstore", "aio"))]
    assert ours and not any(session.id in line for line in ours), "ids are bearer secrets"


@pytest.mark.standalone
async def test_references_and_breaker_names_need_the_admin_token(
    replica: Replica, dovecot: Dovecot, store: SessionStore
) -> None:
    """A session's client may not point the server at its environment's secrets or at a
    shared breaker (403); nothing is stored."""
    session = await store.create()
    ref = await replica.http.put(
        url(session.id), json=body(dovecot, credential_ref="env:SESSIONSTORE_SECRET_KEY"),
        headers=owner(session.id),
    )  # fmt: skip
    shared = await replica.http.put(
        url(session.id), json=body(dovecot, secret="x", breaker="imap:imap.gmail.com:993"),
        headers=owner(session.id),
    )  # fmt: skip
    assert (ref.status_code, shared.status_code) == (403, 403)
    assert "admin token" in ref.json()["detail"]
    assert await replica.state.upstreams.pool.records.list(session.id) == {}


@pytest.mark.standalone
async def test_a_secret_without_a_key_is_refused_as_the_library_does(
    store: SessionStore, redis_url: str, dovecot: Dovecot
) -> None:
    """No SESSIONSTORE_SECRET_KEY: a secret is refused (422, nothing stored), a reference is
    still taken."""
    settings = replica_settings(store, redis_url, None)
    session = await store.create()
    async with running(settings) as keyless:
        refused = await keyless.http.put(
            url(session.id), json=body(dovecot, secret=PASSWORD), headers=owner(session.id)
        )
        taken = await keyless.http.put(
            url(session.id, "ref"),
            json=body(dovecot, credential_ref=f"env:{ENV_PASSWORD_NAME}"),
            headers=ADMIN_AUTH,
        )
        names = set(await keyless.state.upstreams.pool.records.list(session.id))
    assert refused.status_code == 422 and refused.json()["error"] == "invalid_input"
    assert "SESSIONSTORE_SECRET_KEY" in refused.json()["detail"]
    assert PASSWORD not in refused.text
    assert taken.status_code == 200 and names == {"ref"}


@pytest.mark.standalone
async def test_a_wrong_password_is_a_clear_error_and_never_feeds_the_breaker(
    replica: Replica, dovecot: Dovecot, store: SessionStore
) -> None:
    """verify=true with a wrong password: 422 upstream_rejected / auth_failed, nothing stored.
    Registered unverified, its live probe says unhealthy with auth_failed. The breaker's
    window holds no call from either, and holds the one success that follows."""
    session = await store.create()
    wrong = body(dovecot, secret="not-the-password")
    refused = await replica.http.put(
        url(session.id) + "?verify=true", json=wrong, headers=owner(session.id)
    )
    assert refused.status_code == 422, refused.text
    problem = refused.json()
    assert (problem["error"], problem["reason"], problem["upstream"]) == (
        "upstream_rejected",
        "auth_failed",
        "mail",
    )
    missing = await replica.http.get(url(session.id), headers=owner(session.id))
    assert missing.status_code == 404 and missing.json()["error"] == "upstream_not_found"
    assert (
        await replica.http.put(url(session.id), json=wrong, headers=owner(session.id))
    ).status_code == 200
    probed = (
        await replica.http.get(
            url(session.id, tail="/health?probe=true"), headers=owner(session.id)
        )
    ).json()
    assert probed["healthy"] is False and probed["error"].startswith("auth_failed")
    recorded = (
        await replica.http.get(url(session.id, tail="/health"), headers=owner(session.id))
    ).json()
    assert recorded["healthy"] is False and recorded["error"].startswith("auth_failed")
    admin = BreakerAdmin(store.redis, key_prefix=store.settings.key_prefix)
    breaker = f"imap+plain:127.0.0.1:{dovecot.port}"
    assert (await admin.status(breaker)).calls == 0
    right = body(dovecot, secret=PASSWORD)
    assert (
        await replica.http.put(url(session.id), json=right, headers=owner(session.id))
    ).status_code == 200
    healthy = await replica.http.get(
        url(session.id, tail="/health?probe=true"), headers=owner(session.id)
    )
    assert healthy.json()["healthy"] is True
    status = await admin.status(breaker)
    assert (status.calls, status.failures) == (1, 0), "the window is fed by real outcomes"


@pytest.mark.standalone
async def test_a_kicked_connection_is_replaced_by_the_next_probe(
    replica: Replica, dovecot: Dovecot, store: SessionStore
) -> None:
    """``doveadm kick`` (BYE) ends this replica's connection; the next probe opens a new one
    on its own (upkeep, not a failure: healthy, no error) and the record's check is newer."""
    session = await store.create()
    headers = owner(session.id)
    await replica.http.put(url(session.id), json=body(dovecot, secret=PASSWORD), headers=headers)
    first = (
        await replica.http.get(url(session.id, tail="/health?probe=true"), headers=headers)
    ).json()
    entry = replica.state.upstreams.pool.entry(session.id, "mail")
    kicked = entry.connection
    assert kicked is not None and kicked.alive
    dovecot.kick("testuser")

    async def bye_seen() -> bool:
        return not kicked.alive

    await eventually(bye_seen)
    second = (
        await replica.http.get(url(session.id, tail="/health?probe=true"), headers=headers)
    ).json()
    assert second["healthy"] is True and second["error"] is None
    assert entry.connection is not None and entry.connection is not kicked
    assert when(second["checked_at"]) > when(first["checked_at"])
    record = (await replica.http.get(url(session.id), headers=headers)).json()
    assert (record["state"], record["attempts"], record["last_error"]) == ("connected", 0, None)


@pytest.mark.standalone
async def test_a_stopped_server_shows_in_the_record_and_recovers(
    replica: Replica, dovecot: Dovecot, store: SessionStore
) -> None:
    """Dovecot stopped: the live probe and then the record say unhealthy, naming the fault,
    and the breaker counts it; Dovecot back: the next probe reconnects and the record is
    healthy again with its error cleared."""
    session = await store.create()
    headers = owner(session.id)
    await replica.http.put(url(session.id), json=body(dovecot, secret=PASSWORD), headers=headers)
    assert (
        await replica.http.get(url(session.id, tail="/health?probe=true"), headers=headers)
    ).json()["healthy"]
    entry = replica.state.upstreams.pool.entry(session.id, "mail")
    held = entry.connection
    dovecot.stop()

    async def drop_seen() -> bool:
        return held is not None and not held.alive

    await eventually(drop_seen)  # else the probe meets the shutdown's polite BYE first
    down = (
        await replica.http.get(url(session.id, tail="/health?probe=true"), headers=headers)
    ).json()
    assert down["healthy"] is False
    assert down["error"].startswith("refused"), down["error"]
    recorded = (await replica.http.get(url(session.id, tail="/health"), headers=headers)).json()
    assert recorded["healthy"] is False and recorded["error"] == down["error"]
    admin = BreakerAdmin(store.redis, key_prefix=store.settings.key_prefix)
    assert (await admin.status(f"imap+plain:127.0.0.1:{dovecot.port}")).failures >= 1
    dovecot.start()
    back = (
        await replica.http.get(url(session.id, tail="/health?probe=true"), headers=headers)
    ).json()
    assert back["healthy"] is True and back["response_time_ms"] > 0
    record = (await replica.http.get(url(session.id, tail="/health"), headers=headers)).json()
    assert record["healthy"] is True and record["error"] is None
    assert when(record["last_activity"]) > when(recorded["last_activity"])


@pytest.mark.standalone
async def test_list_read_and_remove(
    replica: Replica, dovecot: Dovecot, store: SessionStore
) -> None:
    """Records are listed by name; removing one closes this replica's socket for it and
    leaves the others; a second removal and a read of it are 404."""
    session = await store.create()
    headers = owner(session.id)
    for name in ("mail", "backup"):
        put = await replica.http.put(
            url(session.id, name), json=body(dovecot, secret=PASSWORD), headers=headers
        )
        assert put.status_code == 200
    await replica.http.get(url(session.id, tail="/health?probe=true"), headers=headers)
    pool = replica.state.upstreams.pool
    assert pool.open_connections() == [(session.id, "mail")]
    listed = (await replica.http.get(f"/sessions/{session.id}/upstreams", headers=headers)).json()
    assert [u["name"] for u in listed["upstreams"]] == ["backup", "mail"]
    removed = await replica.http.delete(url(session.id), headers=headers)
    assert removed.status_code == 204
    assert pool.open_connections() == []
    again = await replica.http.delete(url(session.id), headers=headers)
    read = await replica.http.get(url(session.id), headers=headers)
    assert (again.status_code, read.status_code) == (404, 404)
    left = (await replica.http.get(f"/sessions/{session.id}/upstreams", headers=headers)).json()
    assert [u["name"] for u in left["upstreams"]] == ["backup"]


@pytest.mark.standalone
async def test_unknown_ended_and_malformed_sessions(replica: Replica, store: SessionStore) -> None:
    """Through the admin token (no middleware in front): unknown 404, ended 410, malformed
    400, an unknown upstream 404 upstream_not_found, a name outside the rule 422."""
    live = await store.create()
    ended = await store.create()
    await store.delete(ended.id)
    unknown = "0." + "A" * 24
    answers = {
        "unknown": await replica.http.get(f"/sessions/{unknown}/upstreams", headers=ADMIN_AUTH),
        "ended": await replica.http.get(f"/sessions/{ended.id}/upstreams", headers=ADMIN_AUTH),
        "malformed": await replica.http.get("/sessions/nope/upstreams/mail", headers=ADMIN_AUTH),
        "no record": await replica.http.get(url(live.id, "mail", "/health"), headers=ADMIN_AUTH),
        "empty": await replica.http.get(f"/sessions/{live.id}/upstreams", headers=ADMIN_AUTH),
        "bad name": await replica.http.get(url(live.id, "a%20b"), headers=ADMIN_AUTH),
    }
    codes = {what: answer.status_code for what, answer in answers.items()}
    assert codes == {
        "unknown": 404, "ended": 410, "malformed": 400, "no record": 404, "empty": 200,
        "bad name": 422,
    }  # fmt: skip
    assert answers["no record"].json()["error"] == "upstream_not_found"
    assert answers["empty"].json() == {"upstreams": []}


@pytest.mark.standalone
async def test_who_may_call(replica: Replica, dovecot: Dovecot, store: SessionStore) -> None:
    """No header and no token: 401; another session's header: 403; a wrong bearer or the
    health token: 401; the admin token or this session's header: allowed."""
    mine, other = await store.create(), await store.create()
    where = f"/sessions/{mine.id}/upstreams"
    cases = {
        "nothing": {},
        "other session": owner(other.id),
        "wrong bearer": {"Authorization": "Bearer nope"},
        "health token": HEALTH_AUTH,
        "admin": ADMIN_AUTH,
        "owner": owner(mine.id),
    }
    codes = {
        what: (await replica.http.get(where, headers=h)).status_code for what, h in cases.items()
    }
    assert codes == {
        "nothing": 401, "other session": 403, "wrong bearer": 401, "health token": 401,
        "admin": 200, "owner": 200,
    }  # fmt: skip
    put = await replica.http.put(f"{where}/mail", json=body(dovecot, secret=PASSWORD))
    assert put.status_code == 401 and put.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.standalone
async def test_no_admin_token_turns_administration_off(
    store: SessionStore, redis_url: str, secret_key: str, dovecot: Dovecot
) -> None:
    """With SESSIONSTORE_ADMIN_TOKEN unset (a service token set instead) the admin token is
    refused with 401, a reference is refused to the service with 403 naming the admin token;
    the session's own client still manages its upstreams."""
    settings = replica_settings(
        store,
        redis_url,
        secret_key,
        admin_token=None,
        service_tokens=SecretStr(SERVICE),
    )
    session = await store.create()
    async with running(settings) as served:
        admin = await served.http.get(f"/sessions/{session.id}/upstreams", headers=ADMIN_AUTH)
        ref = await served.http.put(
            url(session.id), json=body(dovecot, credential_ref="env:X"), headers=SERVICE_AUTH
        )
        mine = await served.http.put(
            url(session.id), json=body(dovecot, secret="x"), headers=owner(session.id)
        )
    assert admin.status_code == 401
    assert ref.status_code == 403 and "admin token" in ref.json()["detail"]
    assert mine.status_code == 200


@pytest.mark.standalone
@pytest.mark.parametrize(
    "sent",
    [
        {"password": PASSWORD},  # a misspelled field
        {"secret": PASSWORD * 200},  # over the length limit
        {"secret": PASSWORD, "credential_ref": "env:X", "extra": PASSWORD},
        {"secret": PASSWORD, "port": "not a port"},
    ],
)
async def test_validation_errors_never_echo_what_was_sent(
    replica: Replica, dovecot: Dovecot, store: SessionStore, sent: dict[str, Any]
) -> None:
    """A body the schema refuses gets 422 invalid_request with the field and the reason, but
    not the values (they may be the secret); nothing is stored."""
    session = await store.create()
    answer = await replica.http.put(
        url(session.id), json=body(dovecot) | sent, headers=owner(session.id)
    )
    assert answer.status_code == 422, answer.text
    assert PASSWORD not in answer.text and QUOTED not in answer.text
    assert answer.json()["error"] == "invalid_request" and answer.json()["detail"]
    assert answer.json()["errors"] and all("loc" in error for error in answer.json()["errors"])
    assert await replica.state.upstreams.pool.records.list(session.id) == {}


@pytest.mark.standalone
async def test_exactly_one_credential_and_only_allowed_hosts(
    replica: Replica, dovecot: Dovecot, store: SessionStore
) -> None:
    """Neither or both of secret and credential_ref: 422; a host off the allow-list: 422
    naming the setting; an unknown kind: 422. Nothing is stored."""
    session = await store.create()
    sent = {
        "neither": body(dovecot),
        "both": body(dovecot, secret="x", credential_ref=f"env:{ENV_PASSWORD_NAME}"),
        "host": body(dovecot, secret="x", host="imap.example.org"),
        "kind": body(dovecot, secret="x", kind="pop3"),
    }
    answers = {
        what: await replica.http.put(url(session.id), json=b, headers=ADMIN_AUTH)
        for what, b in sent.items()
    }
    assert {what: a.status_code for what, a in answers.items()} == dict.fromkeys(sent, 422)
    assert "SESSIONSTORE_UPSTREAM_ALLOWED_HOSTS" in answers["host"].json()["detail"]
    assert "no connector" in answers["kind"].json()["detail"]
    assert await replica.state.upstreams.pool.records.list(session.id) == {}


@pytest.mark.standalone
async def test_an_open_breaker_refuses_verification_with_retry_after(
    replica: Replica, dovecot: Dovecot, store: SessionStore
) -> None:
    """A breaker forced open across the fleet: verify=true answers 503 breaker_open with
    Retry-After and stores nothing; an unverified registration's health says unhealthy by
    the breaker, both recorded and live, without touching Dovecot, and the refused probe
    queues the connection's reconnect job for the workers."""
    session = await store.create()
    breaker = f"imap+plain:127.0.0.1:{dovecot.port}"
    why = {"actor": "test", "reason": "maintenance"}
    forced = await replica.http.post(
        f"/breakers/{breaker}/force-open", json=why, headers=ADMIN_AUTH
    )
    assert forced.status_code == 200
    headers = owner(session.id)
    refused = await replica.http.put(
        url(session.id) + "?verify=true", json=body(dovecot, secret=PASSWORD), headers=headers
    )
    assert refused.status_code == 503 and refused.json()["error"] == "breaker_open"
    assert int(refused.headers["Retry-After"]) >= 1
    assert await replica.state.upstreams.pool.records.list(session.id) == {}
    await replica.http.put(url(session.id), json=body(dovecot, secret=PASSWORD), headers=headers)
    recorded = (await replica.http.get(url(session.id, tail="/health"), headers=headers)).json()
    assert recorded["healthy"] is False and recorded["breaker"]["state"] == "forced_open"
    live = (
        await replica.http.get(url(session.id, tail="/health?probe=true"), headers=headers)
    ).json()
    assert live["healthy"] is False and live["error"].startswith("breaker_open")
    assert replica.state.upstreams.pool.open_connections() == []
    # The refusal handed the connection to the worker fleet: reconnecting, one job queued
    # on the queue's Redis (here the store's), to probe when the breaker lets it.
    assert live["state"] == "reconnecting" and live["next_attempt_at"] is not None
    keys = store.keys
    queued = await store.redis.zscore(keys.job_queue(), keys.reconnect_job_id(session.id, "mail"))
    assert queued is not None


@pytest.mark.standalone
async def test_a_session_that_ends_takes_its_socket_along(
    replica: Replica, dovecot: Dovecot, store: SessionStore
) -> None:
    """Deleting the session closes this replica's socket for its upstream soon after (the
    pool follows the session events), and the records went with the session."""
    session = await store.create()
    headers = owner(session.id)
    await replica.http.put(url(session.id), json=body(dovecot, secret=PASSWORD), headers=headers)
    await replica.http.get(url(session.id, tail="/health?probe=true"), headers=headers)
    pool = replica.state.upstreams.pool
    assert pool.open_connections() == [(session.id, "mail")]
    closed = await replica.http.delete(f"/sessions/{session.id}", headers=ADMIN_AUTH)
    assert closed.status_code == 204

    async def closed() -> bool:
        return pool.open_connections() == []

    await eventually(closed)
    gone = await replica.http.get(f"/sessions/{session.id}/upstreams", headers=ADMIN_AUTH)
    assert gone.status_code == 410


@pytest.mark.standalone
async def test_a_removal_through_one_replica_closes_the_others_sockets(
    replica: Replica,
    dovecot: Dovecot,
    store: SessionStore,
    redis_url: str,
    secret_key: str,
) -> None:
    """B holds sockets for two upstreams; A removes both. B's pool, on its next write for
    one, finds the record gone and drops the socket (never keeps using a removed one); B's
    routes, reading the other's record, answer 404 and drop that socket too."""
    session = await store.create()
    headers = owner(session.id)
    async with running(replica_settings(store, redis_url, secret_key)) as other:
        pool = other.state.upstreams.pool
        for name in ("mail", "backup"):
            put = await replica.http.put(
                url(session.id, name), json=body(dovecot, secret=PASSWORD), headers=headers
            )
            assert put.status_code == 200
            await other.http.get(url(session.id, name, "/health?probe=true"), headers=headers)
            assert (
                await replica.http.delete(url(session.id, name), headers=headers)
            ).status_code == 204
        assert len(pool.open_connections()) == 2
        with pytest.raises(UpstreamNotFound):
            await pool.health(session.id, "mail")  # its probe works; its record write does not
        assert pool.open_connections() == [(session.id, "backup")]
        stale = await other.http.get(
            url(session.id, "backup", "/health?probe=true"), headers=headers
        )
        assert stale.status_code == 404 and stale.json()["error"] == "upstream_not_found"
        assert pool.open_connections() == []
