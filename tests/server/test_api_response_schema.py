"""The API's response bodies keep their shape: property names, required sets and types of
every response model in the OpenAPI document match the recorded ones.

The API models derive from the domain models (`SessionOut` from `Session`,
`BreakerOut` from `BreakerSnapshot`, `UpstreamHealthOut` from `HealthReport`);
this pins what clients see, so a change to a domain model cannot change an
answer unnoticed. ``api_response_properties.json`` was recorded from the
hand-written models; update it only for a deliberate change of the API.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from sessionstore import Settings
from sessionstore.server import create_app

RECORDED = Path(__file__).with_name("api_response_properties.json")


def _shape(node: Any, components: dict[str, Any]) -> Any:
    """A property's type without titles, descriptions or defaults; enums as their base type."""
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[1]
        target = components[name]
        if "enum" in target:
            return {"type": target.get("type", "string")}
        return {"ref": name}
    out: dict[str, Any] = {k: node[k] for k in ("type", "format") if k in node}
    if "anyOf" in node:
        out["anyOf"] = sorted((_shape(n, components) for n in node["anyOf"]), key=json.dumps)
    for key in ("items", "additionalProperties"):
        if key in node:
            out[key] = _shape(node[key], components)
    if "const" in node or "enum" in node:
        out["type"] = node.get("type", "string")
    return out


def response_properties(document: dict[str, Any]) -> dict[str, Any]:
    """Every model reachable from a response, with its required names and property types."""
    components = document["components"]["schemas"]
    todo = [
        media["schema"]["$ref"].rsplit("/", 1)[1]
        for operations in document["paths"].values()
        for operation in operations.values()
        for response in operation.get("responses", {}).values()
        for media in response.get("content", {}).values()
        if "$ref" in media.get("schema", {})
    ]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            text = json.dumps(components[name])
            todo += [part.split('"', 1)[0] for part in text.split('"#/components/schemas/')[1:]]
    return {
        name: {
            "required": sorted(components[name].get("required", [])),
            "properties": {
                prop: _shape(value, components)
                for prop, value in sorted(components[name]["properties"].items())
            },
        }
        for name in sorted(seen)
        if "properties" in components[name]
    }


def test_response_models_keep_their_properties() -> None:
    """Names, required sets and types of the response models are the recorded ones."""
    app = create_app(Settings(redis_url="redis://127.0.0.1:1/0", service_tokens=SecretStr("s")))
    assert response_properties(app.openapi()) == json.loads(RECORDED.read_text())


def test_session_out_is_the_session_with_seconds() -> None:
    """`SessionOut` shows a session's fields, the idle timeout in seconds and the earlier
    deadline, and hides the timedelta."""
    from datetime import UTC, datetime, timedelta

    from sessionstore import Session, SessionStatus
    from sessionstore.server.models import SessionOut

    at = datetime(2026, 1, 1, tzinfo=UTC)
    session = Session(
        id="0.abcdefghijklmnopqrstuvwx",
        status=SessionStatus.ACTIVE,
        created_at=at,
        last_activity=at,
        idle_timeout=timedelta(minutes=30),
        idle_deadline=at + timedelta(minutes=30),
        absolute_deadline=at + timedelta(minutes=10),
        metadata={},
        state={"a": 1},
        version=3,
        fence=0,
        connection_count=0,
        active_requests=1,
    )
    body = SessionOut.of(session).model_dump(mode="json")
    assert "idle_timeout" not in body
    assert body["idle_timeout_seconds"] == 1800.0
    assert body["expires_at"] == "2026-01-01T00:10:00Z"
    assert body["status"] == "active" and body["state"] == {"a": 1} and body["user_id"] is None
