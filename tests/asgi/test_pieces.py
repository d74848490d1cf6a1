"""Pure logic of the ASGI layer and the server: cookies, the error table, If-Match, patterns."""

from __future__ import annotations

import json

import pytest
from fastapi import HTTPException
from pydantic import SecretStr, ValidationError

from sessionstore import (
    BackendUnavailable,
    BreakerOpen,
    GlobalLimitExceeded,
    InvalidInput,
    InvalidSessionId,
    LockNotAcquired,
    PayloadTooLarge,
    SessionClosed,
    SessionExpired,
    SessionLimitExceeded,
    SessionNotFound,
    SessionRotated,
    SessionStoreError,
    StaleFence,
    UpstreamError,
    UpstreamNotFound,
    UpstreamRejected,
    UpstreamUnavailable,
    VersionConflict,
)
from sessionstore._ids import _ATTRIBUTE, _NAME, ATTRIBUTE_PATTERN, NAME_PATTERN
from sessionstore.asgi import SessionCookie, problem_for
from sessionstore.server.models import CreateSession, StateUpdate
from sessionstore.server.routes._common import matches_etag, parse_if_match

SID = "3.AAAAAAAAAAAAAAAAAAAAAAAA"


def cookie(signing_key: str = "k3y") -> SessionCookie:
    return SessionCookie(secret=SecretStr(signing_key), name="sid")


def test_cookie_round_trip() -> None:
    """A signed id unsigns to itself; the value carries the id and a signature, nothing else."""
    value = cookie().sign(SID)
    assert value.startswith(SID + ".") and len(value) > len(SID) + 10
    assert cookie().unsign(value) == SID


@pytest.mark.parametrize(
    "value",
    [SID, SID + ".forged", "", "....", "é.x"],
)
def test_cookie_refuses_unsigned_or_forged_values(value: str) -> None:
    """Anything not signed with the secret unsigns to None."""
    assert cookie().unsign(value) is None


def test_cookie_signed_with_another_secret_is_refused() -> None:
    """Rotating the secret invalidates old cookies."""
    assert cookie("new").unsign(cookie("old").sign(SID)) is None


def test_cookie_headers() -> None:
    """Set-Cookie carries HttpOnly, SameSite and Secure; clearing sets Max-Age=0."""
    jar = SessionCookie(secret=SecretStr("k"), name="sid", max_age=60, domain="example.com")
    header = jar.set_header(SID)
    for part in ("HttpOnly", "SameSite=Lax", "Secure", "Max-Age=60", "Domain=example.com"):
        assert part in header
    assert jar.clear_header().startswith("sid=; ") and "Max-Age=0" in jar.clear_header()


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (InvalidSessionId("bad"), 400, "invalid_session_id"),
        (PayloadTooLarge("state", 10, 5), 413, "payload_too_large"),
        (InvalidInput("bad"), 422, "invalid_input"),
        (SessionNotFound(SID), 404, "session_not_found"),
        (SessionExpired(SID), 410, "session_expired"),
        (SessionClosed(SID), 410, "session_closed"),
        (SessionRotated(SID, "3.BBBBBBBBBBBBBBBBBBBBBBBB"), 410, "session_rotated"),
        (VersionConflict(SID, 1, 2), 412, "version_conflict"),
        (StaleFence(SID, 1, 2), 409, "conflict"),
        (SessionLimitExceeded(SID, 4), 429, "session_limit_exceeded"),
        (GlobalLimitExceeded(100), 503, "capacity_exceeded"),
        (LockNotAcquired("lock", "held"), 409, "lock_conflict"),
        (BreakerOpen("imap", 2.5), 503, "breaker_open"),
        (UpstreamError("imap", "down"), 502, "upstream_error"),
        (UpstreamUnavailable("mail", "down", reason="timeout"), 503, "upstream_unavailable"),
        (UpstreamRejected("mail", "no", reason="auth_failed"), 422, "upstream_rejected"),
        (UpstreamRejected("mail", "no", reason="credential_unavailable"), 422, "upstream_rejected"),
        (UpstreamRejected("mail", "no", reason="bad_command"), 502, "upstream_rejected"),
        (UpstreamRejected("mail", "no"), 502, "upstream_rejected"),
        (UpstreamNotFound("mail", "not registered"), 404, "upstream_not_found"),
        (
            BackendUnavailable("Redis unavailable: 10.0.0.1:6379 refused"),
            503,
            "backend_unavailable",
        ),
        (SessionStoreError("?"), 500, "internal_error"),
    ],
)
def test_problem_table(error: SessionStoreError, status: int, code: str) -> None:
    """Each error maps to its documented status and code."""
    problem = problem_for(error)
    assert (problem.status, problem.code) == (status, code)


def test_upstream_answers_carry_reason_and_retry_after() -> None:
    """An unavailable upstream always says when to retry (its hint, else 1 s) and why;
    a rejection names the reason the client has to fix."""
    hinted = problem_for(UpstreamUnavailable("mail", "x", reason="refused", retry_after=2.2))
    bare = problem_for(UpstreamUnavailable("mail", "x", reason="timeout", attempts=2))
    rejected = problem_for(UpstreamRejected("mail", "x", reason="auth_failed")).response()
    assert hinted.response().headers["Retry-After"] == "3"
    assert bare.response().headers["Retry-After"] == "1"
    assert bare.extra == {"upstream": "mail", "reason": "timeout", "attempts": 2}
    assert json.loads(rejected.body)["reason"] == "auth_failed"
    assert "Retry-After" not in rejected.headers


def test_waits_carry_retry_after_in_whole_seconds() -> None:
    """Retry-After is a whole number of seconds, at least 1."""
    assert problem_for(BreakerOpen("imap", 2.5)).response().headers["Retry-After"] == "3"
    assert problem_for(BackendUnavailable("x", 0.1)).response().headers["Retry-After"] == "1"
    assert "Retry-After" not in problem_for(SessionNotFound(SID)).response().headers


def test_backend_detail_does_not_leak_hosts() -> None:
    """The driver message (hosts, ports) stays in the logs, not in the answer."""
    problem = problem_for(BackendUnavailable("Redis unavailable: 10.0.0.1:6379 refused"))
    assert "10.0.0.1" not in problem.detail


def test_gone_answer_names_the_successor() -> None:
    """A rotated id's answer says where the session went."""
    new = "3.BBBBBBBBBBBBBBBBBBBBBBBB"
    assert problem_for(SessionRotated(SID, new)).extra["superseded_by"] == new


@pytest.mark.parametrize(("header", "version"), [(None, None), ("*", None), ('"7"', 7), ("7", 7)])
def test_if_match_accepted_forms(header: str | None, version: int | None) -> None:
    """If-Match takes the ETag the server sent, a bare version, or *."""
    assert parse_if_match(header) == version


@pytest.mark.parametrize("header", ['W/"7"', '"7", "8"', "", "-1", "7.0", "٣", "9" * 30])
def test_if_match_refused_forms(header: str) -> None:
    """Weak tags, lists, signs, non-ASCII digits and huge numbers are 400."""
    with pytest.raises(HTTPException) as caught:
        parse_if_match(header)
    assert caught.value.status_code == 400


def test_if_none_match() -> None:
    """If-None-Match matches the same tag, a list containing it, a weak form, or *."""
    assert matches_etag('"3"', '"3"') and matches_etag('"1", W/"3"', '"3"')
    assert matches_etag("*", '"3"') and not matches_etag('"2"', '"3"')
    assert not matches_etag(None, '"3"')


def test_api_patterns_match_the_store() -> None:
    """The OpenAPI patterns say what the store accepts: the request models use the
    store's own definitions."""
    assert _NAME.pattern == NAME_PATTERN
    assert _ATTRIBUTE.pattern == ATTRIBUTE_PATTERN
    schema = CreateSession.model_json_schema()["properties"]
    assert schema["user_id"]["anyOf"][0]["pattern"] == NAME_PATTERN
    assert StateUpdate.model_json_schema()["properties"]["delete"]["items"]["pattern"] == (
        ATTRIBUTE_PATTERN
    )


def test_request_models_refuse_unknown_fields() -> None:
    """extra='forbid': a misspelt field is an error, not silently ignored."""
    with pytest.raises(ValidationError):
        CreateSession.model_validate({"userid": "ann"})
    with pytest.raises(ValidationError):
        StateUpdate.model_validate({"set": {"a": 1}})
