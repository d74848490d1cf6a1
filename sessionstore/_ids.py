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
#: A session id inside a longer text (a request path, a log message).
_SESSION_ID_IN_TEXT = re.compile(
    r"(?<![A-Za-z0-9_.-])(?:0|[1-9][0-9]{0,3})\.[A-Za-z0-9_-]{"
    + str(_TOKEN_CHARS)
    + r"}(?![A-Za-z0-9_-])"
)
#: How much of a session id logs show: the shard, the dot and the token's first characters.
SHOWN_ID_CHARS = 6

#: user ids, conversation ids, upstream names: printable, no key-pattern or tag characters.
NAME_PATTERN = r"^[A-Za-z0-9_.:@+=/-]{1,256}$"
_NAME = re.compile(NAME_PATTERN)
#: state attribute names: short and plain, so `redis-cli HGETALL` stays readable.
ATTRIBUTE_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"
_ATTRIBUTE = re.compile(ATTRIBUTE_PATTERN)


def _digits_between(low: str, high: str) -> str:
    """A regular expression for the numbers from `low` to `high`, both of one length."""
    if len(low) == 1:
        return low if low == high else f"[{low}-{high}]"
    if low[0] == high[0]:
        return low[0] + _digits_between(low[1:], high[1:])
    rest = len(low) - 1
    if low[1:] == "0" * rest and high[1:] == "9" * rest:
        return _digits_between(low[0], high[0]) + f"[0-9]{{{rest}}}"
    parts = [low[0] + _digits_between(low[1:], "9" * rest)]
    if int(high[0]) - int(low[0]) > 1:
        parts.append(
            _digits_between(str(int(low[0]) + 1), str(int(high[0]) - 1)) + f"[0-9]{{{rest}}}"
        )
    parts.append(high[0] + _digits_between("0" * rest, high[1:]))
    return "(?:" + "|".join(parts) + ")"


def session_id_pattern(shards: int) -> str:
    """`SESSION_ID_PATTERN` narrowed to the shards of a store (``0`` to ``shards - 1``):
    the ids such a store can hold, for its API's schema.

    .. versionadded:: 0.1
    """
    top = str(shards - 1)
    if len(top) == 1:
        numbers = [_digits_between("0", top)]
    else:  # every shorter length whole, then the top's length up to it
        numbers = ["[0-9]", *(f"[1-9][0-9]{{{n - 1}}}" for n in range(2, len(top)))]
        numbers.append(_digits_between("1" + "0" * (len(top) - 1), top))
    return rf"^({'|'.join(numbers)})\.[A-Za-z0-9_-]{{{_TOKEN_CHARS}}}$"


def new_session_id(shard: int) -> str:
    """A fresh session id in `shard`.

    .. versionadded:: 0.1
    """
    return f"{shard}.{secrets.token_urlsafe(TOKEN_BYTES)}"


def shorten_session_ids(text: str) -> str:
    """`text` with every session id in it cut to its first `SHOWN_ID_CHARS` characters
    and ``...``: an id is a bearer secret, and logs never carry one whole."""
    return _SESSION_ID_IN_TEXT.sub(lambda found: found.group()[:SHOWN_ID_CHARS] + "...", text)


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


def short_id(session_id: str) -> str:
    """The first characters of `session_id`, for logs: an id is a bearer secret."""
    return session_id[:SHOWN_ID_CHARS] + "..."
