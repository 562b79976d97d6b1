"""The request schemas (server/schemas.py) refuse each bad body the routes refused before the pydantic models,
with the same status, message and error kind, and each route answers that refusal in its API's error shape.

The tables hold the exact messages the hand-written parsers gave (their last version, before issue 21); a
schema that drifts from them fails here. Model-free: FakeReranker behind the app, no weights."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel, ValidationError

from twostage_integrations.server import (
    TEI_ROUTE,
    V1_ROUTE,
    V2_ROUTE,
    ErrorKind,
    RequestError,
    TeiRequest,
    V1Request,
    V2Request,
    create_app,
    parse_rerank_request,
    parse_tei_request,
    parse_v1_request,
)
from twostage_integrations.server.schemas import request_error, tei_error_type
from twostage_integrations.testing import FakeReranker

MAX_DOCUMENTS = 3
VALIDATION, EMPTY = "Validation", "Empty"

V2_BAD = [
    ({"model": "m", "documents": ["a"]}, 400, VALIDATION, "invalid request: query is required"),
    ({"query": None, "documents": ["a"]}, 400, VALIDATION, "invalid request: query is required"),
    (
        {"query": "   ", "documents": ["a"]},
        400,
        VALIDATION,
        "invalid request: query is empty or whitespace; pass the text to search for",
    ),
    ({"query": 3, "documents": ["a"]}, 400, VALIDATION, "invalid request: query must be a string, got int"),
    ({"query": "q"}, 400, VALIDATION, "invalid request: documents must be a list of strings"),
    (
        {"query": "q", "documents": "one string"},
        400,
        VALIDATION,
        "invalid request: documents must be a list of strings",
    ),
    ({"query": "q", "documents": []}, 400, EMPTY, "invalid request: documents is empty; send at least one document"),
    (
        {"query": "q", "documents": ["a", "a", "a", "a"]},
        413,
        VALIDATION,
        "too many documents: 4, more than the limit of 3; split them",
    ),
    ({"query": "q", "documents": ["a", 7]}, 400, VALIDATION, "invalid request: documents[1] is int, not a string"),
    (
        {"query": "q", "documents": [{"text": "a"}]},
        400,
        VALIDATION,
        "invalid request: documents[0] is dict, not a string",
    ),
    ({"query": "q", "documents": [None]}, 400, VALIDATION, "invalid request: documents[0] is NoneType, not a string"),
    ({"query": "q", "documents": ["a"], "top_n": 0}, 400, VALIDATION, "invalid request: top_n must be >= 1, got 0"),
    ({"query": "q", "documents": ["a"], "top_n": -2}, 400, VALIDATION, "invalid request: top_n must be >= 1, got -2"),
    (
        {"query": "q", "documents": ["a"], "top_n": "2"},
        400,
        VALIDATION,
        "invalid request: top_n must be an integer >= 1, got '2'",
    ),
    (
        {"query": "q", "documents": ["a"], "top_n": 1.5},
        400,
        VALIDATION,
        "invalid request: top_n must be an integer >= 1, got 1.5",
    ),
    (
        {"query": "q", "documents": ["a"], "top_n": True},
        400,
        VALIDATION,
        "invalid request: top_n must be an integer >= 1, got True",
    ),
    (
        {"query": "q", "documents": ["a"], "return_documents": "yes"},
        400,
        VALIDATION,
        "invalid request: return_documents must be true or false",
    ),
    (
        {"query": "q", "documents": ["a"], "max_tokens_per_doc": 0},
        400,
        VALIDATION,
        "invalid request: max_tokens_per_doc must be >= 1, got 0",
    ),
    ({"query": 3, "documents": [], "top_n": 0}, 400, VALIDATION, "invalid request: query must be a string, got int"),
    (["q", ["a"]], 400, VALIDATION, "invalid request: the body must be a JSON object with query and documents"),
    ("just a string", 400, VALIDATION, "invalid request: the body must be a JSON object with query and documents"),
]
TEI_BAD = [
    ({"texts": ["a"]}, 400, VALIDATION, "invalid request: query is required"),
    ({"query": "q"}, 400, VALIDATION, "invalid request: texts must be a list of strings"),
    ({"query": "q", "texts": "a"}, 400, VALIDATION, "invalid request: texts must be a list of strings"),
    ({"query": "q", "texts": []}, 400, EMPTY, "invalid request: texts is empty; send at least one document"),
    ({"query": "q", "texts": [{"text": "a"}]}, 400, VALIDATION, "invalid request: texts[0] is dict, not a string"),
    (
        {"query": "q", "texts": ["a", "a", "a", "a"]},
        413,
        VALIDATION,
        "too many documents: 4, more than the limit of 3; split them",
    ),
    (
        {"query": "q", "texts": ["a"], "raw_scores": "yes"},
        400,
        VALIDATION,
        "invalid request: raw_scores must be true or false",
    ),
    (
        {"query": "q", "texts": ["a"], "return_text": 1},
        400,
        VALIDATION,
        "invalid request: return_text must be true or false",
    ),
    (
        {"query": "q", "texts": ["a"], "truncate": "no"},
        400,
        VALIDATION,
        "invalid request: truncate must be true or false",
    ),
    (
        {"query": "q", "texts": ["a"], "truncation_direction": "up"},
        400,
        VALIDATION,
        'invalid request: truncation_direction must be "left" or "right", got \'up\'',
    ),
    (
        {"query": "q", "texts": ["a"], "truncation_direction": 5},
        400,
        VALIDATION,
        'invalid request: truncation_direction must be "left" or "right", got 5',
    ),
    (
        {"query": "q", "texts": ["a"], "truncation_direction": "Left"},
        400,
        VALIDATION,
        'invalid request: truncation_direction "left" is not supported: the model truncates from the right',
    ),
    ({"query": "q", "documents": ["a"]}, 400, VALIDATION, "invalid request: texts must be a list of strings"),
    (["q", ["a"]], 400, VALIDATION, "invalid request: the body must be a JSON object with query and texts"),
]
V1_BAD = [
    ({"documents": ["a"]}, 400, VALIDATION, "invalid request: query is required"),
    (
        {"query": "q", "documents": [7]},
        400,
        VALIDATION,
        'invalid request: documents[0] is int, not a string or {"text": string}',
    ),
    (
        {"query": "q", "documents": [{"title": "a"}]},
        400,
        VALIDATION,
        'invalid request: documents[0] is dict, not a string or {"text": string}',
    ),
    ({"query": "q", "documents": []}, 400, EMPTY, "invalid request: documents is empty; send at least one document"),
    (
        {"query": "q", "documents": ["a", "a", "a", "a"]},
        413,
        VALIDATION,
        "too many documents: 4, more than the limit of 3; split them",
    ),
    ({"query": "q", "documents": ["a"], "top_k": 0}, 400, VALIDATION, "invalid request: top_k must be >= 1, got 0"),
    (
        {"query": "q", "documents": ["a", "b"], "top_n": 1, "top_k": 2},
        400,
        VALIDATION,
        "invalid request: top_n (1) and top_k (2) disagree; send one of them",
    ),
    (
        {"query": "q", "documents": ["a", "b"], "top_n": 1, "top_k": 2, "truncation": "yes"},
        400,
        VALIDATION,
        "invalid request: top_n (1) and top_k (2) disagree; send one of them",
    ),
    (
        {"query": "q", "documents": ["a"], "truncation": "yes"},
        400,
        VALIDATION,
        "invalid request: truncation must be true or false",
    ),
    (
        {"query": "q", "documents": ["a"], "return_documents": "yes"},
        400,
        VALIDATION,
        "invalid request: return_documents must be true or false",
    ),
    (
        {"query": "q", "documents": ["a"], "raw_scores": 0},
        400,
        VALIDATION,
        "invalid request: raw_scores must be true or false",
    ),
    ({"query": "q", "texts": ["a"]}, 400, VALIDATION, "invalid request: documents must be a list of strings"),
    (3, 400, VALIDATION, "invalid request: the body must be a JSON object with query and documents"),
]

SCHEMAS: dict[str, type[V2Request] | type[TeiRequest] | type[V1Request]] = {
    V2_ROUTE: V2Request,
    TEI_ROUTE: TeiRequest,
    V1_ROUTE: V1Request,
}
# Each route's error body, from the message and TEI's error_type.
SHAPES: dict[str, Callable[[str, str], dict[str, Any]]] = {
    V2_ROUTE: lambda message, kind: {"message": message},
    TEI_ROUTE: lambda message, kind: {"error": message, "error_type": kind},
    V1_ROUTE: lambda message, kind: {"message": message, "detail": message},
}
CASES = (
    [(V2_ROUTE, *case) for case in V2_BAD]
    + [(TEI_ROUTE, *case) for case in TEI_BAD]
    + [(V1_ROUTE, *case) for case in V1_BAD]
)


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_app(FakeReranker(), max_documents=MAX_DOCUMENTS)) as http:
        yield http


@pytest.mark.parametrize(("route", "body", "status", "error_type", "message"), CASES)
def test_the_schema_refuses_as_the_route_did(route, body, status, error_type, message):
    with pytest.raises(RequestError) as info:
        SCHEMAS[route].parse(body, MAX_DOCUMENTS)
    refused = info.value
    assert (refused.status_code, refused.message) == (status, message)
    assert tei_error_type(refused.status_code, refused.kind) == error_type
    assert refused.retry_after is None  # a bad body is not worth retrying


@pytest.mark.parametrize(("route", "body", "status", "error_type", "message"), CASES)
def test_the_route_answers_the_refusal_in_its_api_shape(client, route, body, status, error_type, message):
    response = client.post(route, json=body)
    assert response.status_code == status
    assert response.json() == SHAPES[route](message, error_type)
    assert "retry-after" not in response.headers


def test_the_thin_parsers_return_what_the_routes_used():
    """The public parse_* functions keep their dict results (capped counts, the v1 top_n/top_k merge)."""
    v2 = parse_rerank_request({"query": "q", "documents": ["a", "b"], "top_n": 9, "max_tokens_per_doc": 5})
    assert v2["top_n"] == 2 and v2["documents"] == ["a", "b"] and v2["return_documents"] is False
    assert v2["warnings"] == ["max_tokens_per_doc is not applied: the model truncates at its own max_length"]
    tei = parse_tei_request({"query": "q", "texts": ["a"], "truncation_direction": "Right", "return_text": None})
    assert tei == {"query": "q", "documents": ["a"], "raw_scores": False, "return_text": False}
    v1 = parse_v1_request({"query": "q", "documents": [{"text": "a"}, "b", "c"], "top_n": 5, "top_k": 3})
    assert v1["top_n"] == 3 and v1["documents"] == ["a", "b", "c"] and v1["infinity"] is False
    assert parse_v1_request({"query": "q", "documents": ["a"], "raw_scores": None})["infinity"] is True


def test_max_documents_comes_from_the_caller():
    body = {"query": "q", "documents": ["a"] * 4}
    assert len(V2Request.parse(body).documents) == 4  # the default limit (1,000)
    with pytest.raises(RequestError) as info:
        V2Request.parse(body, max_documents=2)
    assert info.value.status_code == 413 and "limit of 2" in info.value.message


def test_a_pydantic_error_of_no_check_of_ours_is_still_a_400_naming_the_field():
    class Other(BaseModel):
        count: int

    with pytest.raises(ValidationError) as info:
        Other.model_validate({"count": "many"})
    refused = request_error(info.value)
    assert refused.status_code == 400 and refused.message.startswith("invalid request: count: ")


@pytest.mark.parametrize(
    ("status", "kind"),
    [(400, "Validation"), (413, "Validation"), (429, "Overloaded"), (500, "Backend"), (503, "Unhealthy")],
)
def test_error_kinds_follow_the_status_unless_named(status, kind):
    assert tei_error_type(status) == kind == ErrorKind.for_status(status).value
    assert tei_error_type(status, ErrorKind.EMPTY) == "Empty"
    assert {k.value for k in ErrorKind} == {"Unhealthy", "Backend", "Overloaded", "Validation", "Tokenizer", "Empty"}
