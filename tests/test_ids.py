"""Session ids and names: what may reach a key name (property-based)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sessionstore import InvalidInput, InvalidSessionId, KeySpace, new_session_id
from sessionstore._ids import check_attribute, check_name, session_id_pattern, session_shard

SAFE_KEY_PART = re.compile(r"[A-Za-z0-9_.:@+=/-]+")


@given(st.integers(min_value=0, max_value=1023))
def test_new_ids_parse_back_to_their_shard(shard: int) -> None:
    """Every issued id is accepted and names the shard it was issued for."""
    session_id = new_session_id(shard)
    assert session_shard(session_id, 1024) == shard


def test_ids_carry_at_least_128_random_bits() -> None:
    """The token is 24 base64url characters: 144 bits from `secrets`."""
    token = new_session_id(0).split(".", 1)[1]
    assert len(token) * 6 >= 128
    assert len({new_session_id(0) for _ in range(10_000)}) == 10_000


@given(st.text(max_size=300))
def test_any_accepted_id_builds_only_safe_key_names(text: str) -> None:
    """Whatever string comes in, it is either refused or yields keys with no glob,
    hash-tag, whitespace or control characters beyond the shard's own tag."""
    keys = KeySpace("ss", 16)
    try:
        built = keys.session(text)
    except InvalidSessionId:
        return
    for key in built.ordered():
        tag, _, rest = key.partition("}")
        assert tag == f"ss:{{{built.shard}"
        assert SAFE_KEY_PART.fullmatch(rest)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "*",
        "0.*",
        "{1}.AAAAAAAAAAAAAAAAAAAAAAAA",
        "0.AAAAAAAAAAAAAAAAAAAAAAA\n",
        "00.AAAAAAAAAAAAAAAAAAAAAAAA",
        "16.AAAAAAAAAAAAAAAAAAAAAAAA",
        "x" * 100_000,
        None,
        7,
    ],
)
def test_malformed_ids_are_refused(bad: object) -> None:
    """Wrong form, a shard the store lacks, huge strings and non-strings are refused."""
    with pytest.raises(InvalidSessionId):
        session_shard(bad, 16)


@given(st.text(max_size=300))
def test_names_are_refused_or_safe(text: str) -> None:
    """User ids and the like either pass unchanged with only safe characters, or are refused."""
    try:
        assert check_name(text, "user_id") == text
    except InvalidInput:
        return
    assert SAFE_KEY_PART.fullmatch(text) and len(text) <= 256


@given(st.text(max_size=200))
def test_attribute_names_are_refused_or_plain(text: str) -> None:
    try:
        check_attribute(text)
    except InvalidInput:
        return
    assert re.fullmatch(r"[A-Za-z0-9_.:-]{1,128}", text)


@pytest.mark.parametrize("shards", [1, 4, 10, 16, 99, 100, 101, 1000, 1024])
def test_the_schema_pattern_takes_exactly_this_stores_ids(shards: int) -> None:
    """`session_id_pattern(n)` matches the ids of shards 0 to n - 1 and no other: no
    leading zero, no shard past the last, the token's length and alphabet."""
    pattern = re.compile(session_id_pattern(shards))
    token = "aZ09_-" * 4
    taken = [n for n in range(1100) if pattern.fullmatch(f"{n}.{token}")]
    assert taken == list(range(shards))
    for bad in (f"01.{token}", f"0.{token}x", f"0.{token[:-1]}", f"0.{token[:-1]}*", f" 0.{token}"):
        assert pattern.fullmatch(bad) is None, bad
    assert pattern.fullmatch(new_session_id(shards - 1))
