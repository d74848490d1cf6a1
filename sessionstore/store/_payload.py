"""Encoding of metadata and state values, and their size limits.

Values are stored as compact JSON, one hash field per state attribute.
Limits are checked here before any I/O; the total state size and attribute
count are checked again inside the write script, atomically, because they
depend on what is already stored.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .._ids import check_attribute
from ..exceptions import InvalidInput, PayloadTooLarge
from ..settings import SessionSettings

#: `json.dumps` with these options builds an encoder on every call; one built once
#: encodes the same (it keeps no state between calls) in about half the time.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def encode_json(value: Any, what: str) -> str:
    """Compact JSON for `value`.

    Raises:
        InvalidInput: `value` is not JSON (NaN and infinities are refused too).
    """
    try:
        return _ENCODER.encode(value)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{what} is not JSON-serialisable: {exc}") from exc


#: The standard library's JSON scanner (C), called without `json.loads`'s wrapping.
_scan_json: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]  # set in __init__, missing from typeshed


def decode_json(text: str) -> Any:
    """A stored value back from the compact JSON `encode_json` wrote.

    The scanner is called directly: `json.loads` adds a whitespace match on
    both sides and a call layer, which cost more than scanning a small value.
    Text the scanner does not read whole (whitespace, trailing data, not JSON)
    goes through `json.loads`, so its answers and errors stay the same.
    """
    try:
        value, end = _scan_json(text, 0)
    except StopIteration:
        return json.loads(text)
    if end != len(text):
        return json.loads(text)
    return value


def encode_metadata(metadata: Mapping[str, Any] | None, settings: SessionSettings) -> str:
    """Metadata as JSON text within `max_metadata_bytes`.

    Raises:
        InvalidInput: not a mapping with string keys, or not JSON.
        PayloadTooLarge: over the limit.
    """
    if metadata is None:
        return "{}"
    if not isinstance(metadata, Mapping) or not all(isinstance(k, str) for k in metadata):
        raise InvalidInput("metadata must be a mapping with string keys")
    text = encode_json(dict(metadata), "metadata")
    size = len(text.encode())
    if size > settings.max_metadata_bytes:
        raise PayloadTooLarge("metadata size in bytes", size, settings.max_metadata_bytes)
    return text


def encode_state(
    values: Mapping[str, Any] | None,
    settings: SessionSettings,
    *,
    deleting: Iterable[str] = (),
) -> list[str]:
    """State attributes as a flat ``[name, json, ...]`` list, each within limits.

    Raises:
        InvalidInput: a bad attribute name, a non-JSON value, or a name both set
            and deleted.
        PayloadTooLarge: a value over `max_attribute_bytes`, or more attributes or
            bytes than a whole session may hold.
    """
    if values is None:
        return []
    if not isinstance(values, Mapping):
        raise InvalidInput("state must be a mapping of attribute name to JSON value")
    both = set(values) & set(deleting)
    if both:
        raise InvalidInput(f"attributes both set and deleted: {sorted(both)}")
    if len(values) > settings.max_attributes:
        raise PayloadTooLarge("attribute count", len(values), settings.max_attributes)
    flat: list[str] = []
    total = 0
    for name, value in values.items():
        text = encode_json(value, f"state attribute {check_attribute(name)!r}")
        size = len(text.encode())
        if size > settings.max_attribute_bytes:
            raise PayloadTooLarge(
                f"attribute {name!r} size in bytes", size, settings.max_attribute_bytes
            )
        total += size
        flat += [name, text]
    if total > settings.max_state_bytes:
        raise PayloadTooLarge("state size in bytes", total, settings.max_state_bytes)
    return flat
