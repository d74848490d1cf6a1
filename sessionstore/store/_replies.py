"""Turning script replies that refuse a session into the matching exception.

Every single-session script answers ``{'gone', status, superseded_by}`` or
``{'missing'}`` when the session cannot be used; this is the one place that
maps those to `SessionGone` subclasses and `SessionNotFound`. The successor
named by the script never reaches the error: an ended id must not lead
whoever holds it to a live session (operators read the link with
``SessionStore.lookup(..., with_successor=True)``).
"""

from __future__ import annotations

from typing import Any, NoReturn

from ..exceptions import (
    SessionClosed,
    SessionExpired,
    SessionGone,
    SessionNotFound,
    SessionRotated,
    SessionStoreError,
)

_GONE: dict[str, type[SessionGone]] = {
    "expired": SessionExpired,
    "closed": SessionClosed,
    "rotated": SessionRotated,
}


def gone_error(session_id: str, status: str, superseded_by: str | None = None) -> SessionGone:
    """The `SessionGone` subclass for a tombstone status (with `superseded_by` only
    when the caller is entitled to it)."""
    return _GONE.get(status, SessionGone)(session_id, superseded_by or None)


def raise_refusal(session_id: str, reply: list[Any]) -> NoReturn:
    """Raise the error a ``gone``/``missing`` reply stands for.

    Raises:
        SessionGone: for ``{'gone', status, superseded_by}``.
        SessionNotFound: for ``{'missing'}``.
        SessionStoreError: for a reply this module does not know (a bug).
    """
    if reply[0] == "gone":
        raise gone_error(session_id, str(reply[1]))
    if reply[0] == "missing":
        raise SessionNotFound(session_id)
    raise SessionStoreError(f"unexpected script reply for {session_id}: {reply[0]!r}")
