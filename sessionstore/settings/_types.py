"""The value types settings share: durations and "empty means unset"."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, TypeVar

from pydantic import BeforeValidator

T = TypeVar("T")


def _seconds_text(value: object) -> object:
    """Environment variables arrive as text: read "90" or "1.5" as seconds."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value  # ISO 8601 ("PT30M") and pydantic's own forms
    return value


def _empty_is_none(value: object) -> object:
    """``NAME=`` (compose passes unset variables through empty) means unset."""
    return None if value == "" else value


#: A duration setting: seconds ("1800", "0.25") or ISO 8601 ("PT30M").
Duration = Annotated[timedelta, BeforeValidator(_seconds_text)]

#: An optional setting whose empty text means unset (None): ``EmptyIsNone[str]``.
EmptyIsNone = Annotated[T | None, BeforeValidator(_empty_is_none)]
