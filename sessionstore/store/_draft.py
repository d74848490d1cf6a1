"""`SessionDraft`: a request's changes to the session state, committed with its lease.

A request that holds a lease reads the session when it takes the lease and
returns the lease when it ends: two round trips. Changes staged in the draft
ride on the second one (the lease-return script writes them, with
compare-and-set on the version the request read), so reading, changing and
leasing cost no third round trip. Values are checked when they are staged,
so a bad value fails where the handler sets it, before any I/O.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

from .._ids import check_attribute
from ..exceptions import InvalidInput, PayloadTooLarge
from ..settings import SessionSettings
from ._payload import encode_json


class SessionDraft(MutableMapping[str, Any]):
    """The session's state attributes as one request changes them.

    Reads see the request's own changes. `changes` is what differs from the
    state read at the start; committing sends only that, and only if the
    session's version is still `version` (else `VersionConflict`, nothing written).
    After the commit the draft is closed and refuses further changes.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        state: Mapping[str, Any],
        version: int,
        settings: SessionSettings,
        *,
        stored: Mapping[str, str] | None = None,
    ) -> None:
        """`stored`: the state's values as the record holds them (JSON text by
        attribute name), when at hand: then they are not encoded again."""
        self._settings = settings
        self._read = (
            dict(stored)
            if stored is not None
            else {name: encode_json(value, name) for name, value in state.items()}
        )
        self._values: dict[str, Any] = dict(state)
        self._encoded: dict[str, str] = dict(self._read)
        #: The session version the request read: the compare-and-set target.
        self.version = version
        self._closed = False

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __setitem__(self, name: str, value: Any) -> None:
        self._check_open()
        text = encode_json(value, f"state attribute {check_attribute(name)!r}")
        size = len(text.encode())
        if size > self._settings.max_attribute_bytes:
            raise PayloadTooLarge(
                f"attribute {name!r} size in bytes", size, self._settings.max_attribute_bytes
            )
        self._values[name] = value
        self._encoded[name] = text

    def __delitem__(self, name: str) -> None:
        self._check_open()
        del self._values[name]
        del self._encoded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"SessionDraft(version={self.version}, changed={self.changed})"

    @property
    def changed(self) -> bool:
        """True when committing would write something."""
        return self._encoded != self._read

    def changes(self) -> tuple[list[str], list[str]]:
        """(flat ``[name, json, ...]`` of attributes to set, names to delete)."""
        sets: list[str] = []
        for name, text in self._encoded.items():
            if self._read.get(name) != text:
                sets += [name, text]
        deletes = [name for name in self._read if name not in self._encoded]
        return sets, deletes

    def close(self) -> None:
        """Refuse changes from now on (the draft was committed or dropped)."""
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidInput("the session draft was already committed; change it before")
