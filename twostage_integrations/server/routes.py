"""The HTTP routes of ``twostage serve``: one short handler per route. Each reads an authorised body
(:func:`read_json`), parses it with its schema, awaits :meth:`RerankService.score` and shapes the answer;
refusals are :class:`~twostage_integrations.server.schemas.RequestError` answered in the route's error shape.

Handlers find the service and the limits on ``request.app.state`` (set by
:func:`~twostage_integrations.server.create_app`), so the router holds no state of its own.
"""

from __future__ import annotations

import json
import logging
import math
import re
import secrets
import uuid
from dataclasses import dataclass
from typing import Any, cast

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ..errors import TwoStageError
from ..scores import check_min_score
from .openapi import documented, probe_responses
from .schemas import (
    DEFAULT_MAX_QUERY_CHARS,
    TEI_ROUTE,
    V1_ROUTE,
    V2_ROUTE,
    ApiVersion,
    BilledUnits,
    CohereError,
    DocumentText,
    EvidenceSpan,
    Meta,
    RequestError,
    TeiError,
    TeiRank,
    TeiRequest,
    Usage,
    V1Data,
    V1Error,
    V1Request,
    V1Response,
    V1Result,
    V2Request,
    V2Response,
    V2Result,
    check_query_length,
    error_body,
    invalid,
)
from .service import RerankService

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RouteSettings:
    """What the routes enforce before the service sees a request.

    Args:
        max_documents: most documents in one request (413 above).
        max_body_bytes: largest body (413 above), counted as it arrives.
        api_key: when set, requests need ``Authorization: Bearer <api_key>``.
        max_query_chars: longest query, in characters (400 above).
    """

    max_documents: int
    max_body_bytes: int
    api_key: str | None = None
    max_query_chars: int = DEFAULT_MAX_QUERY_CHARS

    @property
    def expected_auth(self) -> bytes | None:
        """The ``Authorization`` header a request must carry, or ``None`` when there is no key."""
        return f"Bearer {self.api_key}".encode() if self.api_key else None


router = APIRouter()


def rank_order(scores: list[float], top_n: int | None = None, min_score: float | None = None) -> list[int]:
    """Document indices best first (stable: ties keep document order), cut to ``top_n``.

    Args:
        scores: one score per document.
        top_n: how many to keep (``None``: all).
        min_score: drop documents scored below it (``None``: none dropped); fewer, or none, may remain.

    Returns:
        Indices into ``scores``.
    """
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    order = order if top_n is None else order[:top_n]
    return order if min_score is None else [i for i in order if scores[i] >= min_score]


def min_score_warnings(request: Request, min_score: float | None) -> list[str]:
    """``meta.warnings`` for a ``min_score`` outside the range of the served ``score_kind``: the body is valid by
    the schema (which cannot know the served kind), so it is answered, with no results above the range's top
    (or every ``top_n`` below its bottom), and the warning says why."""
    reranker = _service(request).reranker
    if min_score is None or reranker is None:
        return []
    try:
        check_min_score(min_score, getattr(reranker, "score_kind", None))
    except TwoStageError as exc:
        return [str(exc)]
    return []


def word_count(query: str, documents: list[str]) -> int:
    """``usage`` for the APIs whose clients require one (Voyage, Infinity, Jina): an estimate in words, not the
    model's tokens.

    Args:
        query: the request's query.
        documents: its documents.

    Returns:
        Words of the query and each document, summed over pairs.
    """
    q = len(query.split())
    return sum(q + len(d.split()) for d in documents)


def _meta(version: str, n_documents: int, warnings: list[str] | None = None) -> Meta:
    # Cohere bills 100 documents per search unit.
    units = BilledUnits(search_units=math.ceil(n_documents / 100))
    return Meta(api_version=ApiVersion(version=version), billed_units=units, warnings=warnings or None)


# -- the request path ------------------------------------------------------------------------------------
def _service(request: Request) -> RerankService:
    return request.app.state.service


def _settings(request: Request) -> RouteSettings:
    return request.app.state.settings


async def read_body(request: Request, max_body_bytes: int) -> bytes:
    """The raw body, refused with 413 above ``max_body_bytes``: by its declared length, then as it arrives, so
    a missing or false ``Content-Length`` cannot bypass the limit.

    Args:
        request: the HTTP request.
        max_body_bytes: the largest body accepted.

    Returns:
        The body's bytes.

    Raises:
        RequestError: 413 when the body is larger than the limit.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
        raise RequestError(413, f"request body is {declared} bytes, more than the limit of {max_body_bytes}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_body_bytes:
            raise RequestError(413, f"request body is more than the limit of {max_body_bytes} bytes")
    return bytes(body)


async def read_json(request: Request) -> Any:
    """The decoded body of an authorised request the server can take.

    Args:
        request: the HTTP request.

    Returns:
        The decoded JSON (any JSON value: the route's schema checks its shape).

    Raises:
        RequestError: 401 bad or missing key, 503 not accepting, 413 body too large, 400 not JSON or a query
            longer than the limit.
    """
    settings = _settings(request)
    expected = settings.expected_auth
    if expected is not None:
        given = request.headers.get("authorization", "").encode()
        # compare_digest: the time taken does not depend on how much of the key matched (no timing oracle).
        if not secrets.compare_digest(given, expected):
            raise RequestError(401, "invalid api token: send 'Authorization: Bearer <key>' with the server's key")
    _service(request).check_accepting()
    payload = decode_json(await read_body(request, settings.max_body_bytes))
    check_query_length(payload, settings.max_query_chars)
    return payload


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def decode_json(raw: bytes) -> Any:
    """``raw`` as JSON, refused with 400 when it is not JSON the server can parse and answer in.

    Args:
        raw: the request body.

    Returns:
        The decoded value.

    Raises:
        RequestError: 400 for invalid JSON or UTF-8, an integer over Python's digit limit, nesting deeper than
            the parser's recursion limit, or a lone UTF-16 surrogate escape (``"\\ud800"``), which decodes to a
            string no response could encode.
    """
    try:
        payload = json.loads(raw)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, and int() past sys.get_int_max_str_digits
        raise invalid(f"the body is not valid JSON ({exc})") from None
    except RecursionError:
        raise invalid("the body is not JSON this server can parse: it nests too deeply") from None
    if _SURROGATE_ESCAPE.search(raw):  # rare: only then pay for a second pass (pairs are fine, lone ones are not)
        try:
            json.dumps(payload, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise invalid(
                f"the body has a lone UTF-16 surrogate ({exc.object[exc.start : exc.end]!r}) that is not valid "
                "Unicode; escape characters outside the BMP as a surrogate pair"
            ) from None
    return payload


async def score(request: Request, query: str, documents: list[str]) -> list[float]:
    """The service's scores for one request, cancelled if its client hangs up (noted for the request log)."""
    request.state.n_documents = len(documents)
    return await _service(request).score(query, documents, is_disconnected=request.is_disconnected)


async def score_long(
    request: Request, query: str, documents: list[str], *, limit: int | None = None, cut: bool = False
) -> tuple[list[float], list[EvidenceSpan | None]]:
    """Scores with the long-document handling the request and the server ask for (docs/stage2.md "Long
    documents"): windows with evidence when the served cross-encoder windows or ``limit`` (Cohere's
    ``max_tokens_per_doc``) is given; each pair cut at max_length when ``cut`` (TEI's ``truncate: true``) and the
    server windows; else :func:`score` without evidence."""
    service = _service(request)
    service.check_accepting()
    how = service.windowing()
    if not service.can_window() or (how is None and limit is None) or (cut and how is None):
        return await score(request, query, documents), [None] * len(documents)
    mode: tuple[Any, ...] = ("cut",) if cut else ("windows", how or "max", limit)
    request.state.n_documents = len(documents)
    scores, evidence = await service.score_windows(query, documents, mode, is_disconnected=request.is_disconnected)
    return scores, [EvidenceSpan(**e) if e is not None else None for e in evidence]


# -- routes -----------------------------------------------------------------------------------------------
@router.get("/health", responses=probe_responses("loading the model failed"))
async def health(request: Request) -> JSONResponse:
    """Liveness: 200 while the process can serve or is loading; 503 once loading the model failed."""
    service = _service(request)
    body = {
        "status": "failed" if service.state == "failed" else "ok",
        "state": "draining" if service.draining else service.state,
        "model": service.name,
        **service.stats(),
    }
    cache = getattr(service.reranker, "stats", None)
    if callable(cache):
        body["cache"] = cache()
    return JSONResponse(body, status_code=503 if service.state == "failed" else 200)


@router.get("/ready", responses=probe_responses("not loaded and warmed yet, failed, or draining"))
async def ready(request: Request) -> JSONResponse:
    """Readiness: 200 once the model is loaded and warmed; 503 before, after a failed load, while draining."""
    service = _service(request)
    state = "draining" if service.draining else service.state
    return JSONResponse({"ready": service.ready, "state": state}, status_code=200 if service.ready else 503)


@router.post(
    V2_ROUTE, response_model=V2Response, response_model_exclude_none=True, **documented(V2Request, CohereError)
)
async def rerank(request: Request) -> V2Response:
    """Cohere v2."""
    req = V2Request.parse(await read_json(request), _settings(request).max_documents)
    scores, evidence = await score_long(request, req.query, req.documents, limit=req.max_tokens_per_doc)
    results = [
        V2Result(
            index=i,
            relevance_score=scores[i],
            document=DocumentText(text=req.documents[i]) if req.return_documents else None,
            evidence=evidence[i],
        )
        for i in rank_order(scores, req.top_n, req.min_score)
    ]
    warnings = req.warnings_for(_service(request).can_window()) + min_score_warnings(request, req.min_score)
    return V2Response(id=str(uuid.uuid4()), results=results, meta=_meta("2", len(req.documents), warnings))


@router.post(
    TEI_ROUTE, response_model=list[TeiRank], response_model_exclude_none=True, **documented(TeiRequest, TeiError)
)
async def rerank_tei(request: Request) -> list[TeiRank]:
    """Hugging Face TEI: a bare list of ``{"index", "score"[, "text"]}``, best first, every text."""
    req = TeiRequest.parse(await read_json(request), _settings(request).max_documents)
    invert = _service(request).raw_scorer() if req.raw_scores else float
    scores, evidence = await score_long(request, req.query, req.texts, cut=req.truncate)
    return [
        TeiRank(index=i, score=invert(scores[i]), text=req.texts[i] if req.return_text else None, evidence=evidence[i])
        for i in rank_order(scores)
    ]


@router.post(V1_ROUTE, response_model=V1Response, response_model_exclude_none=True, **documented(V1Request, V1Error))
async def rerank_v1(request: Request) -> V1Response:
    """Cohere v1 / Jina / Infinity (``results``) and Voyage (``data``, ``usage.total_tokens``) in one body."""
    req = V1Request.parse(await read_json(request), _settings(request).max_documents)
    warnings = min_score_warnings(request, req.min_score)
    invert = _service(request).raw_scorer() if req.raw_scores else float
    scores = await score(request, req.query, req.documents)
    data, results = [], []
    for i in rank_order(scores, req.top, req.min_score):
        text = req.documents[i] if req.return_documents else None
        data.append(V1Data(index=i, relevance_score=invert(scores[i]), document=text))  # Voyage: the string
        # Cohere v1 and Jina: an object; Infinity: the string
        document = text if text is None or req.infinity else DocumentText(text=text)
        results.append(V1Result(index=i, relevance_score=invert(scores[i]), document=document))
    words = word_count(req.query, req.documents)
    return V1Response(
        id=str(uuid.uuid4()),
        model=_service(request).name,
        results=results,
        data=data,
        usage=Usage(prompt_tokens=words, total_tokens=words),
        meta=_meta("1", len(req.documents), warnings),
    )


# -- errors -----------------------------------------------------------------------------------------------
def error_response(request: Request, exc: RequestError) -> JSONResponse:
    """``exc`` in the error shape of the request's route, with ``Retry-After`` when it has a retry hint.

    Args:
        request: the refused request (its path picks the shape).
        exc: the refusal.

    Returns:
        The JSON response.
    """
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
    body = error_body(request.url.path, exc.status_code, exc.message, exc.kind)
    return JSONResponse(body, status_code=exc.status_code, headers=headers)


# Starlette types every handler as taking Exception; each below is registered for its own class only.
async def _request_error(request: Request, exc: Exception) -> JSONResponse:
    return error_response(request, cast(RequestError, exc))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own refusals (404, 405) in the route's error shape."""
    http = cast(HTTPException, exc)
    return error_response(request, RequestError(http.status_code, str(http.detail)))


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    return error_response(request, invalid(str(cast(RequestValidationError, exc).errors())))


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    """A bug (not a refusal): logged with its traceback, answered 500 in the route's error shape all the same."""
    logger.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return error_response(
        request, RequestError(500, f"internal server error ({type(exc).__name__}); see the server log")
    )


def install(app: FastAPI) -> None:
    """Add the routes and the error handlers to ``app``.

    Args:
        app: the app; its ``state`` must hold ``service`` (a :class:`RerankService`) and ``settings``
            (:class:`RouteSettings`) before it answers requests.
    """
    app.include_router(router)
    app.add_exception_handler(RequestError, _request_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected_error)  # Starlette's ServerErrorMiddleware calls it
