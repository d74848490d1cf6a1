"""Request and response bodies of the reference server's API.

Request bodies refuse unknown fields (``extra="forbid"``) and carry size
bounds; the store checks names and sizes again before anything reaches Redis,
so every bad input is a clear 4xx.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from ..store import Session

#: Keep in step with ``sessionstore._ids._NAME`` (a unit test checks it).
NAME_PATTERN = r"^[A-Za-z0-9_.:@+=/-]{1,256}$"
#: Keep in step with ``sessionstore._ids._ATTRIBUTE``.
ATTRIBUTE_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"
#: A year: longer lifetimes are almost certainly a unit mistake.
_MAX_SECONDS = 366 * 24 * 3600

Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=256)]
AttributeName = Annotated[str, Field(pattern=ATTRIBUTE_PATTERN, max_length=128)]
Seconds = Annotated[float, Field(gt=0, le=_MAX_SECONDS)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateSession(_Request):
    """Body of ``POST /sessions``."""

    user_id: Name | None = None
    conversation_id: Name | None = None
    #: Small JSON object, replaced as a whole (``max_metadata_bytes``).
    metadata: dict[str, JsonValue] | None = None
    #: Initial state, one attribute per key.
    state: dict[AttributeName, JsonValue] | None = None
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

    values: dict[AttributeName, JsonValue] = Field(default_factory=dict)
    delete: list[AttributeName] = Field(default_factory=list, max_length=1024)
    #: Replaces the metadata object when given.
    metadata: dict[str, JsonValue] | None = None


class SessionOut(BaseModel):
    """A session as the API returns it."""

    id: str
    status: str
    user_id: str | None
    conversation_id: str | None
    created_at: datetime
    last_activity: datetime
    idle_timeout_seconds: float
    idle_deadline: datetime
    absolute_deadline: datetime
    expires_at: datetime
    metadata: dict[str, JsonValue]
    state: dict[str, JsonValue]
    version: int
    fence: int
    active_requests: int
    connection_count: int
    resumed_from: str | None
    rotated_from: str | None

    @classmethod
    def of(cls, session: Session) -> SessionOut:
        """The API view of `session`."""
        data: dict[str, Any] = session.model_dump(exclude={"idle_timeout"})
        return cls(
            **data,
            idle_timeout_seconds=session.idle_timeout.total_seconds(),
            expires_at=session.expires_at,
        )


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
