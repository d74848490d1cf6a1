"""The operators' key documentation matches the key builders; session keys are kept
for a bounded number of recent ids."""

from __future__ import annotations

from pathlib import Path

import pytest

from sessionstore import InvalidSessionId, KeySpace
from sessionstore._keys import SESSION_KEYS_KEPT, describe_layout

DOC = Path(__file__).parents[1] / "docs" / "keys.md"


def test_every_key_pattern_is_documented() -> None:
    """Each row `sessionstore keys` prints appears in docs/keys.md, with its redis-cli line."""
    text = DOC.read_text()
    for row in describe_layout("ss"):
        assert f"`{row['pattern']}`" in text, row["pattern"]
        assert f"`{row['redis_cli']}`" in text, row["redis_cli"]


def test_the_layout_describes_the_keys_the_builders_make() -> None:
    """The documented session-key patterns are the ones KeySpace builds."""
    keys = KeySpace("ss", 16).session("3.AAAAAAAAAAAAAAAAAAAAAAAA")
    patterns = {row["pattern"] for row in describe_layout("ss")}
    for key in keys.ordered():
        generic = key.replace("{3}", "{N}").replace("3.AAAAAAAAAAAAAAAAAAAAAAAA", "<id>")
        assert generic in patterns, generic


def test_the_keys_of_recent_sessions_are_kept_for_a_bounded_number_of_ids() -> None:
    """A repeated id gets the keys built for it before; once `SESSION_KEYS_KEPT` other ids
    came since, they are built anew (equal, not the same object): the cache stays bounded."""
    keys = KeySpace("ss", 16)
    first = keys.session("3.AAAAAAAAAAAAAAAAAAAAAAAA")
    assert keys.session("3.AAAAAAAAAAAAAAAAAAAAAAAA") is first
    for index in range(SESSION_KEYS_KEPT):
        keys.session(f"{index % 16}.{index:024d}")
    again = keys.session("3.AAAAAAAAAAAAAAAAAAAAAAAA")
    assert again == first and again is not first
    assert keys._built_session_keys.cache_info().currsize == SESSION_KEYS_KEPT


@pytest.mark.parametrize(
    "bad", [["3.AAAAAAAAAAAAAAAAAAAAAAAA"], None, 7, "16.AAAAAAAAAAAAAAAAAAAAAAAA"]
)
def test_ids_refused_once_are_refused_again(bad: object) -> None:
    """Malformed ids (unhashable ones too) are refused on every call, never kept."""
    keys = KeySpace("ss", 16)
    for _ in range(2):
        with pytest.raises(InvalidSessionId):
            keys.session(bad)  # type: ignore[arg-type]
    assert keys._built_session_keys.cache_info().currsize == 0


def test_an_id_of_a_str_subclass_builds_the_same_keys() -> None:
    """A `str` subclass is checked and built like the plain string (not cached)."""

    class Text(str):
        pass

    keys = KeySpace("ss", 16)
    assert keys.session(Text("3.AAAAAAAAAAAAAAAAAAAAAAAA")) == keys.session(
        "3.AAAAAAAAAAAAAAAAAAAAAAAA"
    )
