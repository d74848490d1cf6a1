"""Session ids and the other caller-supplied names that reach key names.

A session id is ``<shard>.<token>``: the shard number picks the Redis Cluster
hash tag (and expiry-index shard) of every key of the session; the token is 144
random bits from `secrets`. Everything a caller passes that ends up inside a
key name is checked here first, so ``*``, ``{``, ``}``, spaces, newlines and
huge strings never reach Redis.
"""

from __future__ import annotations

import re
import secrets

from .exceptions import InvalidInput, InvalidSessionId

#: Random bytes per id: 144 bits, base64url-encoded into 24 characters.
TOKEN_BYTES = 18
_TOKEN_CHARS = 24
#: A session id, ``<shard>.<token>``, as a regular expression (the API's schema uses it).
SESSION_ID_PATTERN = r"^(0|[1-9][0-9]{0,3})\.([A-Za-z0-9_-]{" + str(_TOKEN_CHARS) + "})$"
_SESSION_ID = re.compile(SESSION_ID_PATTERN)
_MAX_ID_LENGTH = 5 + _TOKEN_CHARS

#: user ids, conversation ids, upstream names: printable, no key-pattern or tag characters.
NAME_PATTERN = r"^[A-Za-z0-9_.:@+=/-]{1,256}$"
_NAME = re.compile(NAME_PATTERN)
#: state attribute names: short and plain, so `redis-cli HGETALL` stays readable.
ATTRIBUTE_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"
_ATTRIBUTE = re.compile(ATTRIBUTE_PATTERN)


def new_session_id(shard: int) -> str:
    """A fresh session id in `shard`.

    .. versionadded:: 0.1
    """
    return f"{shard}.{secrets.token_urlsafe(TOKEN_BYTES)}"


def session_shard(session_id: object, shards: int) -> int:
    """Check `session_id` and return its shard.

    Raises:
        InvalidSessionId: not a string of the id form, or a shard this store lacks.
    """
    if not isinstance(session_id, str):
        raise InvalidSessionId("not a string")
    if len(session_id) > _MAX_ID_LENGTH:
        raise InvalidSessionId("too long")
    match = _SESSION_ID.fullmatch(session_id)
    if match is None:
        raise InvalidSessionId("not of the form <shard>.<token>")
    shard = int(match.group(1))
    if shard >= shards:
        raise InvalidSessionId(f"shard {shard} is not one of this store's {shards}")
    return shard


def check_name(value: object, what: str) -> str:
    """Check a user id, conversation id or upstream name.

    Raises:
        InvalidInput: not 1-256 characters of ``A-Z a-z 0-9 _ . : @ + = / -``.
    """
    if not isinstance(value, str) or _NAME.fullmatch(value) is None:
        raise InvalidInput(f"{what} must be 1-256 characters of A-Z a-z 0-9 _ . : @ + = / -")
    return value


def check_attribute(name: object) -> str:
    """Check a state attribute name.

    Raises:
        InvalidInput: not 1-128 characters of ``A-Z a-z 0-9 _ . : -``.
    """
    if not isinstance(name, str) or _ATTRIBUTE.fullmatch(name) is None:
        raise InvalidInput("attribute names must be 1-128 characters of A-Z a-z 0-9 _ . : -")
    return name
