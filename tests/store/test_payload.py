"""Metadata and state encoding: JSON only, within limits (property-based)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sessionstore import InvalidInput, PayloadTooLarge, SessionSettings
from sessionstore.store._payload import encode_metadata, encode_state

SETTINGS = SessionSettings(max_attribute_bytes=200, max_state_bytes=500, max_attributes=5)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=10,
)
names = st.from_regex(r"[A-Za-z0-9_.:-]{1,20}", fullmatch=True)


@given(st.dictionaries(names, json_values, max_size=8))
def test_state_round_trips_or_is_refused_for_size(state: dict[str, Any]) -> None:
    """Accepted state decodes to exactly what was given; refusals are size refusals."""
    try:
        flat = encode_state(state, SETTINGS)
    except PayloadTooLarge as exc:
        assert exc.size > exc.limit
        return
    decoded = {flat[i]: json.loads(flat[i + 1]) for i in range(0, len(flat), 2)}
    assert decoded == state
    assert sum(len(v.encode()) for v in flat[1::2]) <= SETTINGS.max_state_bytes


@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), {1, 2}, object(), b"bytes"],
)
def test_non_json_values_are_refused(value: object) -> None:
    with pytest.raises(InvalidInput):
        encode_state({"a": value}, SETTINGS)


def test_limits_each_raise_payload_too_large() -> None:
    with pytest.raises(PayloadTooLarge, match="attribute 'a'"):
        encode_state({"a": "x" * 300}, SETTINGS)
    with pytest.raises(PayloadTooLarge, match="attribute count"):
        encode_state({str(i): i for i in range(6)}, SETTINGS)
    with pytest.raises(PayloadTooLarge, match="state size"):
        encode_state({str(i): "x" * 150 for i in range(4)}, SETTINGS)


def test_metadata_must_be_a_small_json_object() -> None:
    assert encode_metadata(None, SETTINGS) == "{}"
    assert json.loads(encode_metadata({"k": [1]}, SETTINGS)) == {"k": [1]}
    with pytest.raises(InvalidInput):
        encode_metadata(["not", "a", "mapping"], SETTINGS)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        encode_metadata({1: "int key"}, SETTINGS)  # type: ignore[dict-item]
    with pytest.raises(PayloadTooLarge):
        encode_metadata({"k": "x" * 20_000}, SETTINGS)


def test_set_and_delete_of_one_name_is_refused() -> None:
    with pytest.raises(InvalidInput, match="both set and deleted"):
        encode_state({"a": 1}, SETTINGS, deleting=["a"])
