"""Helpers the routers share: documented error answers, ETags and If-Match."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException

from ..models import ProblemOut

#: An id the client sent: checked by the store (malformed ids answer 400).
SESSION_ID_DOC = "A session id as issued by POST /sessions (<shard>.<token>)."


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the refusals a route can give."""
    return {status: {"model": ProblemOut} for status in statuses}


#: Refusals every route that reads a session can give.
SESSION_PROBLEMS = (400, 404, 410, 503)
#: The largest version an If-Match may name (a Redis integer).
_MAX_VERSION = 2**63 - 1


def parse_if_match(value: str | None) -> int | None:
    """The version an ``If-Match`` header asks for; None for absent or ``*``.

    Accepts the ETag the server sent (``"7"``) or the bare number (``7``).

    Raises:
        HTTPException: 400 for anything else (weak tags, lists, junk).
    """
    if value is None or value.strip() == "*":
        return None
    text = value.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    if not (0 < len(text) <= 19 and text.isascii() and text.isdigit()) or int(text) > _MAX_VERSION:
        raise HTTPException(400, 'If-Match must be one version ETag, like "7", or *')
    return int(text)


def matches_etag(header: str | None, tag: str) -> bool:
    """True when an ``If-None-Match`` header names `tag` (or is ``*``)."""
    if header is None:
        return False
    candidates = {part.strip().removeprefix("W/") for part in header.split(",")}
    return "*" in candidates or tag in candidates
