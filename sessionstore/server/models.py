"""Request and response bodies of the reference server's API.

Request bodies refuse unknown fields (``extra="forbid"``) and carry size
bounds; the store checks names and sizes again before anything reaches Redis,
so every bad input is a clear 4xx.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue, computed_field

from .._ids import ATTRIBUTE_PATTERN, NAME_PATTERN
from ..store import Session
from ..store._store import MAX_SESSION_TTL

Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=256)]
AttributeName = Annotated[str, Field(pattern=ATTRIBUTE_PATTERN, max_length=128)]
#: A TTL in seconds: a JSON number (not a string or a boolean), finite, at least a
#: millisecond (the store keeps whole milliseconds), within the store's bound
#: (`MAX_SESSION_TTL`); the store checks the timedelta again.
Seconds = Annotated[
    float,
    Field(strict=True, ge=0.001, le=MAX_SESSION_TTL.total_seconds(), allow_inf_nan=False),
]
#: An object whose keys are attribute names (the schema says so for the keys too).
_ATTRIBUTE_KEYS: dict[str, Any] = {
    "propertyNames": {"maxLength": 128, "pattern": ATTRIBUTE_PATTERN}
}
#: State attributes by name.
Attributes = Annotated[dict[AttributeName, JsonValue], Field(json_schema_extra=_ATTRIBUTE_KEYS)]


class _Request(BaseModel):
    # Strict: the schema's types, not pydantic's coercions (0 is no boolean, "30" no number).
    model_config = ConfigDict(extra="forbid", strict=True)


class CreateSession(_Request):
    """Body of ``POST /sessions``."""

    user_id: Name | None = None
    conversation_id: Name | None = None
    #: Small JSON object, replaced as a whole (``max_metadata_bytes``).
    metadata: dict[str, JsonValue] | None = None
    #: Initial state, one attribute per key.
    state: Attributes | None = None
    idle_timeout_seconds: Seconds | None = None
    absolute_lifetime_seconds: Seconds | None = None

    def idle_timeout(self) -> timedelta | None:
        """The idle timeout asked for, if any."""
        return _delta(self.idle_timeout_seconds)

    def absolute_lifetime(self) -> timedelta | None:
        """The absolute lifetime asked for, if any."""
        return _delta(self.absolute_lifetime_seconds)


def _delta(seconds: float | None) -> timedelta | None:
    return None if seconds is None else timedelta(seconds=seconds)


class StateUpdate(_Request):
    """Body of ``PATCH /sessions/{id}/state``: set some attributes, delete others."""

    values: Attributes = Field(default_factory=dict)
    delete: list[AttributeName] = Field(default_factory=list, max_length=1024)
    #: Replaces the metadata object when given.
    metadata: dict[str, JsonValue] | None = None


class SessionOut(Session):
    """A session as the API returns it: `Session`, with the idle timeout in seconds and
    the earlier deadline as ``expires_at``."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    #: Shown as ``idle_timeout_seconds``.
    idle_timeout: timedelta = Field(exclude=True)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def idle_timeout_seconds(self) -> float:
        """The idle timeout in seconds."""
        return self.idle_timeout.total_seconds()

    @computed_field  # type: ignore[prop-decorator]
    @property
    def expires_at(self) -> datetime:
        """The earlier of the idle and absolute deadlines."""
        return super().expires_at

    @classmethod
    def of(cls, session: Session) -> SessionOut:
        """The API view of `session`."""
        return cls.model_validate(session.model_dump())


class VersionOut(BaseModel):
    """The version a state write produced (also sent as the ``ETag``)."""

    id: str
    version: int


class TouchOut(BaseModel):
    """The idle deadline after a touch."""

    id: str
    idle_deadline: datetime


class SessionList(BaseModel):
    """A user's active sessions."""

    user_id: str
    sessions: list[SessionOut]


class WaitOut(BaseModel):
    """Answer of ``GET /session/wait``: whether the state moved past the given version."""

    changed: bool
    session: SessionOut


class ProblemOut(BaseModel):
    """Every refusal: a machine-readable code, a message and context fields."""

    model_config = ConfigDict(extra="allow")

    error: str
    detail: str
