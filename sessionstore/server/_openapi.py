"""The OpenAPI document says what the server answers.

FastAPI documents the routes' bodies and parameters; this pass adds what
holds for every route, so a new route is documented the same way:

- every refusal (4xx, 5xx) has the one problem shape (`ProblemOut`), FastAPI's
  ``HTTPValidationError`` included: schema errors answer
  ``{"error": "invalid_request", "detail", "errors"}`` (`install_error_handlers`);
- a route with a body may answer 400 (not UTF-8 JSON), 408 (sent too
  slowly), 413 (over ``max_body_bytes``) and 422; one with parameters 422; one behind a bearer
  token or another security scheme 401 and 403;
- an upstream's ``kind`` is one of the connectors this server has, and a
  ``credential_ref`` uses one of its reference schemes;
- session ids (``session_id`` path parameters and the session header) carry
  the id pattern of this store's shard count, and ``If-Match`` the ETag
  pattern, so that every id the schema allows is one this store can hold
  (an unknown one answers 404, not 400).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from .._environment import Settings
from .._ids import session_id_pattern
from ..upstream import connectors_for, credentials_for

PROBLEM_SCHEMA = {"$ref": "#/components/schemas/ProblemOut"}
#: An ``If-Match`` the server takes: ``*``, or one version, quoted (the ETag) or bare.
IF_MATCH_PATTERN = r'^(\*|"[0-9]{1,18}"|[0-9]{1,18})$'
_FASTAPI_ERRORS = ("HTTPValidationError", "ValidationError")
_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")

#: What each status added here means, when the route says nothing more specific.
_ADDED = {
    400: "The body is not UTF-8 JSON",
    401: "Missing or wrong credentials",
    408: "The body did not arrive in time",
    403: "These credentials may not do this, or this endpoint is disabled",
    413: "The body is over the size limit",
    422: "The request does not match the schema",
}


def _ensure(responses: dict[str, Any], status: int) -> None:
    responses.setdefault(str(status), {"description": _ADDED[status]})


def _document_operation(operation: dict[str, Any], patterns: dict[tuple[str, str], str]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    if "requestBody" in operation:
        for status in (400, 408, 413, 422):
            _ensure(responses, status)
    if operation.get("parameters") or "requestBody" in operation:
        _ensure(responses, 422)
    if operation.get("security"):
        _ensure(responses, 401)
        _ensure(responses, 403)
    for code, response in responses.items():
        if code[0] in "45":
            response["content"] = {"application/json": {"schema": PROBLEM_SCHEMA}}
    for parameter in operation.get("parameters", ()):
        schema = parameter.setdefault("schema", {})
        # An optional parameter is absent, never null: a header or a query string
        # cannot carry a JSON null (FastAPI documents `str | None` as one).
        kinds = schema.get("anyOf", [])
        if len(kinds) == 2 and {"type": "null"} in kinds:
            (kind,) = [k for k in kinds if k != {"type": "null"}]
            del schema["anyOf"]
            schema.update(kind)
        pattern = patterns.get((parameter["in"], parameter["name"].lower()))
        if pattern is not None:
            schema["pattern"] = pattern


def api_document(app: FastAPI, settings: Settings) -> dict[str, Any]:
    """The app's OpenAPI document with every refusal, id and ETag pattern documented."""
    document = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        description=app.description,
        routes=app.routes,
    )
    ids = session_id_pattern(settings.session.shards)
    patterns = {
        ("path", "session_id"): ids,
        ("header", settings.server.session_header.lower()): ids,
        ("header", "if-match"): IF_MATCH_PATTERN,
    }
    for path_item in document.get("paths", {}).values():
        for method in _METHODS:
            if method in path_item:
                _document_operation(path_item[method], patterns)
    schemas = document.get("components", {}).get("schemas", {})
    for name in _FASTAPI_ERRORS:
        schemas.pop(name, None)
    _document_upstreams(schemas, settings)
    return document


#: The registration body's shapes (`UpstreamBody`): host and port, an MCP URL, a command.
_UPSTREAM_SHAPES = ("RegisterUpstream", "RegisterMcpHttp", "RegisterMcpStdio")


def _document_upstreams(schemas: dict[str, Any], settings: Settings) -> None:
    """An upstream's kind is one of this server's connectors, a credential ref one of its
    reference schemes."""
    connectors = {c.kind for c in connectors_for(settings.upstream)}
    # The host-and-port shape takes every kind but MCP's (a URL or a command: its own shapes).
    kinds = sorted(connectors - {"mcp"})
    register = schemas.get("RegisterUpstream", {}).get("properties", {})
    if kinds and "kind" in register:
        register["kind"]["enum"] = kinds
    schemes = credentials_for(settings, {}).schemes
    for shape in _UPSTREAM_SHAPES:
        properties = schemas.get(shape, {}).get("properties", {})
        for branch in properties.get("credential_ref", {}).get("anyOf", ()):
            if "pattern" in branch:
                branch["pattern"] = rf"^({'|'.join(schemes)}):[A-Za-z0-9_.@+=/-]{{1,256}}$"


def install_openapi(app: FastAPI, settings: Settings) -> None:
    """Serve `api_document` as the app's ``/openapi.json`` (built once, on first use)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = api_document(app, settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
