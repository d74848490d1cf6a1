"""Times as Redis holds them: epoch milliseconds (so Lua can compare them).

Every part (store, breaker, heartbeats, upstream records) converts with these.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def to_ms(delta: timedelta) -> int:
    """A duration as whole milliseconds (at least 1), as scripts take them."""
    return max(1, int(delta.total_seconds() * 1000))


def datetime_to_ms(moment: datetime) -> int:
    """An aware datetime (say, a Redis time the store read) as epoch milliseconds."""
    return int(moment.timestamp() * 1000)


def ms_to_datetime(value: str | int) -> datetime:
    """Epoch milliseconds (as Redis returns them) to an aware UTC datetime."""
    return datetime.fromtimestamp(int(value) / 1000, tz=UTC)


def from_ms(value: str | int | None) -> datetime | None:
    """Like `ms_to_datetime`, with None and "" (an unset field) giving None."""
    if value is None or value == "":
        return None
    return ms_to_datetime(value)
