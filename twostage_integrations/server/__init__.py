"""Rerank endpoints answered by a local reranker (``twostage serve``; extra ``server``): Cohere's ``/v2/rerank``,
Hugging Face TEI's ``/rerank`` and the ``/v1/rerank`` shape Cohere v1, Jina, Voyage and Infinity share.

A client of any of these APIs talks to it by changing only its base URL: the official Cohere SDK
(``cohere.ClientV2(base_url=...)``), :class:`~twostage_integrations.CohereReranker`, LlamaIndex's TEI and Jina
rerankers, the ``voyageai`` SDK, LangChain's ``VoyageAIRerank`` and ``infinity_client`` are tested against it.
All routes share one request path (auth, body limits, admission, the batched model call, errors); each only
maps its request shape in and its response and error shapes out.

Concurrent requests are merged into one model call (dynamic batching, as TEI and Infinity do), the queue is
bounded (429 + ``Retry-After`` when full), each request has a deadline, SIGTERM drains in-flight work, and
``/health`` (liveness) and ``/ready`` (model loaded and warmed) are separate.

Modules: ``schemas`` (request, response and error models per API), ``service`` (:class:`RerankService`:
admission, queue, batching, deadlines, counters; no HTTP), ``routes`` (one handler per route), ``app``
(:func:`create_app`) and ``run`` (uvicorn: :func:`run_server`, :func:`serve_in_thread`). Importing this package
needs no server extra; each name loads its module (and FastAPI) on first use.

>>> from twostage_integrations import CrossEncoderReranker
>>> from twostage_integrations.server import create_app, serve_in_thread
>>> app = create_app(CrossEncoderReranker("path/to/cross-encoder"))  # doctest: +SKIP
>>> with serve_in_thread(app) as url:  # doctest: +SKIP
...     import cohere
...     co = cohere.ClientV2(api_key="unused", base_url=url)
...     co.rerank(model="local", query="capital of France", documents=["Paris.", "Bananas."]).results[0].index
0
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import config
from ..extras import lazy_attributes

# `twostage serve --api-key` reads it when the option is not given
SERVE_API_KEY_ENV = config.TWOSTAGE_SERVE_API_KEY.name

_WHERE = {
    "DEFAULT_MAX_DOCUMENTS": ".schemas",
    "DEFAULT_MAX_QUERY_CHARS": ".schemas",
    "TEI_ROUTE": ".schemas",
    "V1_ROUTE": ".schemas",
    "V2_ROUTE": ".schemas",
    "ErrorKind": ".schemas",
    "RequestError": ".schemas",
    "TeiRequest": ".schemas",
    "V1Request": ".schemas",
    "V2Request": ".schemas",
    "error_body": ".schemas",
    "parse_rerank_request": ".schemas",
    "parse_tei_request": ".schemas",
    "parse_v1_request": ".schemas",
    "tei_error_type": ".schemas",
    "DEFAULT_BATCH_WAIT_MS": ".service",
    "DEFAULT_MAX_BATCH": ".service",
    "DEFAULT_MAX_QUEUE": ".service",
    "MAX_RETRY_AFTER": ".service",
    "RerankService": ".service",
    "batches_across_queries": ".service",
    "raw_score_function": ".service",
    "rank_order": ".routes",
    "word_count": ".routes",
    "DEFAULT_MAX_BODY_BYTES": ".app",
    "create_app": ".app",
    "run_server": ".run",
    "serve_in_thread": ".run",
    "wait_until_ready": ".run",
}
__getattr__ = lazy_attributes(__name__, _WHERE)

if TYPE_CHECKING:
    from .app import DEFAULT_MAX_BODY_BYTES, create_app
    from .routes import rank_order, word_count
    from .run import run_server, serve_in_thread, wait_until_ready
    from .schemas import (
        DEFAULT_MAX_DOCUMENTS,
        DEFAULT_MAX_QUERY_CHARS,
        TEI_ROUTE,
        V1_ROUTE,
        V2_ROUTE,
        ErrorKind,
        RequestError,
        TeiRequest,
        V1Request,
        V2Request,
        error_body,
        parse_rerank_request,
        parse_tei_request,
        parse_v1_request,
        tei_error_type,
    )
    from .service import (
        DEFAULT_BATCH_WAIT_MS,
        DEFAULT_MAX_BATCH,
        DEFAULT_MAX_QUEUE,
        MAX_RETRY_AFTER,
        RerankService,
        batches_across_queries,
        raw_score_function,
    )

__all__ = [
    "DEFAULT_BATCH_WAIT_MS",
    "DEFAULT_MAX_BATCH",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_DOCUMENTS",
    "DEFAULT_MAX_QUERY_CHARS",
    "DEFAULT_MAX_QUEUE",
    "MAX_RETRY_AFTER",
    "SERVE_API_KEY_ENV",
    "TEI_ROUTE",
    "V1_ROUTE",
    "V2_ROUTE",
    "ErrorKind",
    "RequestError",
    "RerankService",
    "TeiRequest",
    "V1Request",
    "V2Request",
    "batches_across_queries",
    "create_app",
    "error_body",
    "parse_rerank_request",
    "parse_tei_request",
    "parse_v1_request",
    "rank_order",
    "raw_score_function",
    "run_server",
    "serve_in_thread",
    "tei_error_type",
    "wait_until_ready",
    "word_count",
]
