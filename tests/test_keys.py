"""The operators' key documentation matches the key builders."""

from __future__ import annotations

from pathlib import Path

from sessionstore import KeySpace
from sessionstore._keys import describe_layout

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
