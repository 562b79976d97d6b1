"""What the rerank routes declare in the app's OpenAPI schema (``GET /openapi.json``).

The routes read their body by hand (raw JSON, so every refusal keeps its API's exact error shape), so FastAPI
cannot infer the request bodies: :func:`documented` declares each route's body from its pydantic request model,
tightened to what the model's checks accept (a non-blank query, a non-empty document list, counts >= 1, flags
true/false/null), and its error statuses with the route's own error model. Clients and schema-driven fuzzers
(``tests/test_server_fuzz.py``) read them; nothing here changes what a route accepts or answers.

>>> from .schemas import CohereError, V2Request
>>> documented(V2Request, CohereError)["openapi_extra"]["requestBody"]["content"]["application/json"]["schema"][
...     "required"
... ]
['query', 'documents']
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, BeforeValidator
from pydantic.fields import FieldInfo

from .schemas import DEFAULT_MAX_DOCUMENTS

_COUNT = {
    "anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}],
    "description": "a JSON integer >= 1 (1.0 is refused)",
}
_FLAG = {"anyOf": [{"type": "boolean"}, {"type": "null"}], "description": "null counts as false"}
_QUERY = {"type": "string", "minLength": 1, "pattern": r"\S", "description": "the query; not blank"}
_DIRECTION = {
    "anyOf": [{"type": "string", "pattern": "^[Rr][Ii][Gg][Hh][Tt]$"}, {"type": "null"}],
    "description": 'only "right" (any case): the model truncates from the right; "left" is refused',
}
_TEXT_OBJECT = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}


def _documents(item: dict[str, Any]) -> dict[str, Any]:
    limit = f"at most --max-documents (default {DEFAULT_MAX_DOCUMENTS}); more: 413"
    return {"type": "array", "minItems": 1, "items": item, "description": limit}


# What each field check of schemas.py accepts, by the check's name: the models' own JSON schema only says
# "string" or "integer or null" (and a default of null for the required fields, whose checks refuse null).
_BY_CHECK: dict[str, dict[str, Any]] = {
    "_query": _QUERY,
    "_documents": _documents({"type": "string"}),
    "_text_documents": _documents({"anyOf": [{"type": "string"}, _TEXT_OBJECT]}),
    "_count": _COUNT,
    "_agreeing_top_k": _COUNT,
    "_flag": _FLAG,
    "_direction": _DIRECTION,
}

# Every rerank route can answer these; the body is the route's error model.
ERROR_STATUSES = {
    400: "invalid request: the body is not JSON, a field is wrong, or the model refuses an option",
    401: "missing or wrong `Authorization: Bearer <key>` (only when the server has an API key)",
    413: f"more documents than --max-documents (default {DEFAULT_MAX_DOCUMENTS}) or a body over --max-body-bytes",
    429: "the request queue is full; retry after `Retry-After` seconds",
    499: "the client closed the connection before its scores were ready (never read by that client)",
    500: "the model failed or returned a non-finite score",
    502: "the upstream reranker (a hosted API behind this server) failed",
    503: "the model is loading, failed to load, or the server is draining; retry after `Retry-After` seconds",
    504: "the request waited longer than --request-timeout for the model",
}


def _check_name(field: FieldInfo) -> str:
    return next((getattr(m.func, "__name__", "") for m in field.metadata if isinstance(m, BeforeValidator)), "")


def request_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON schema of a route's body: the model's fields as its checks accept them, the required ones required.

    Args:
        model: the route's request model (``V2Request``, ``TeiRequest``, ``V1Request``).

    Returns:
        A JSON schema object; unknown fields are allowed (the routes ignore them).
    """
    schema = model.model_json_schema()
    properties = {}
    for name, field in model.model_fields.items():
        own = schema["properties"][name]
        properties[name] = {**_BY_CHECK.get(_check_name(field), own), "title": own["title"]}
    return {
        "title": schema["title"],
        "description": schema.get("description", ""),
        "type": "object",
        "properties": properties,
        # absent and null are refused alike for these (schemas._required)
        "required": [name for name, field in model.model_fields.items() if field.validate_default],
    }


def documented(model: type[BaseModel], error_model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI arguments of a rerank route's decorator: its request body and its error responses.

    Args:
        model: the route's request model.
        error_model: the route's error body (``CohereError``, ``V1Error``, ``TeiError``).

    Returns:
        ``openapi_extra`` and ``responses`` keyword arguments for ``APIRouter.post``.
    """
    body = {"content": {"application/json": {"schema": request_schema(model)}}, "required": True}
    responses: dict[int | str, dict[str, Any]] = {
        status: {"model": error_model, "description": description} for status, description in ERROR_STATUSES.items()
    }
    return {"openapi_extra": {"requestBody": body}, "responses": responses}


def probe_responses(what: str) -> dict[int | str, dict[str, Any]]:
    """``responses`` for ``/health`` and ``/ready``: a JSON object, 200 or 503.

    Args:
        what: what 503 means on this route.

    Returns:
        The ``responses`` keyword argument for ``APIRouter.get``.
    """
    obj = {"application/json": {"schema": {"type": "object"}}}
    return {200: {"description": "OK", "content": obj}, 503: {"description": what, "content": obj}}
