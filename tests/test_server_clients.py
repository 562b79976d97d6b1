"""`twostage serve`'s other routes, called by the real clients users have: TEI's ``/rerank`` (LlamaIndex's
TEI postprocessor) and ``/v1/rerank`` (LlamaIndex's Jina postprocessor, the ``voyageai`` SDK, LangChain's
``VoyageAIRerank``, ``infinity_client``). Every client must get the ranking the SciFact cross-encoder gives
when called directly, with the scores ``/v2/rerank`` gives. Shapes, limits and errors use the model-free
``FakeReranker``. All traffic stays on 127.0.0.1."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import voyageai
import voyageai.error
from fastapi.testclient import TestClient
from infinity_client import AuthenticatedClient
from infinity_client.api.default import rerank as infinity_rerank
from infinity_client.models import RerankInput, ReRankResult
from langchain_core.documents import Document
from langchain_voyageai import VoyageAIRerank
from llama_index.core.schema import NodeWithScore, TextNode
from llama_index.postprocessor.jinaai_rerank import JinaRerank
from llama_index.postprocessor.tei_rerank import TextEmbeddingInference

from twostage_integrations import CrossEncoderReranker, Hit
from twostage_integrations.server import create_app, serve_in_thread
from twostage_integrations.testing import FakeReranker

KEY = "clients-test-key-5c1e"
TOP = 3


@pytest.fixture(scope="module")
def served(cross_encoder):
    """Base URL of an in-process server with the real cross-encoder and bearer auth."""
    with serve_in_thread(create_app(cross_encoder, api_key=KEY)) as url:
        yield url


@pytest.fixture(scope="module")
def cases(scifact_subset):
    """(query, 8 SciFact passages cut to 400 characters) for two test queries: relevant ones among distractors."""
    doc_ids, texts, _, queries, qrels = scifact_subset
    position = {d: i for i, d in enumerate(doc_ids)}
    out = []
    for k, qid in enumerate(list(queries)[:2]):
        relevant = [texts[position[d]][:400] for d in qrels[qid] if d in position]
        distractors = [texts[100 + (k * 7 + j) % 400][:400] for j in range(8 - len(relevant))]
        out.append((queries[qid], distractors[:4] + relevant + distractors[4:]))
    return out


def local(cross_encoder, query: str, docs: list[str]) -> list[Hit]:
    """The model called directly: the ranking every client must get."""
    return cross_encoder.rerank(query, [Hit(id=str(i), text=d) for i, d in enumerate(docs)])


def v2_scores(url: str, query: str, docs: list[str]) -> dict[int, float]:
    """Scores by document index from the Cohere ``/v2/rerank`` route of the same server."""
    response = httpx.post(
        f"{url}/v2/rerank",
        json={"model": "m", "query": query, "documents": docs},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=300,
    )
    assert response.status_code == 200, response.text
    return {r["index"]: r["relevance_score"] for r in response.json()["results"]}


def check(got: Sequence[tuple[int, float]], want: list[Hit], v2: dict[int, float], top: int | None = TOP) -> None:
    """A client's (index, score) list: the model's order cut to ``top``, valid indices, the v2 scores."""
    indices = [i for i, _ in got]
    assert all(0 <= i < len(want) for i in indices)
    assert indices == [int(h.id) for h in want[:top]]
    # Same model, but batches of other shapes (other padding) may move the last float32 digits.
    assert [s for _, s in got] == pytest.approx([v2[i] for i in indices], abs=1e-5)


def nodes(docs: list[str]) -> list[NodeWithScore]:
    return [NodeWithScore(node=TextNode(text=d, id_=str(i)), score=0.0) for i, d in enumerate(docs)]


# -- TEI /rerank ------------------------------------------------------------------------------------------
def test_tei_route_answers_the_model_ranking_in_tei_shape(served, cross_encoder, cases):
    query, docs = cases[0]
    body = {"query": query, "texts": docs, "return_text": True, "truncate": True, "truncation_direction": "Right"}
    response = httpx.post(f"{served}/rerank", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=300)
    assert response.status_code == 200, response.text
    ranks = response.json()
    assert isinstance(ranks, list) and all(set(r) == {"index", "score", "text"} for r in ranks)
    assert [r["text"] for r in ranks] == [docs[r["index"]] for r in ranks]
    check(
        [(r["index"], r["score"]) for r in ranks],
        local(cross_encoder, query, docs),
        v2_scores(served, query, docs),
        None,
    )


def test_tei_raw_scores_are_the_model_logits(served, rerank_model_path, cases):
    """raw_scores inverts the sigmoid: it must equal the same model loaded without an activation."""
    query, docs = cases[1]
    response = httpx.post(
        f"{served}/rerank",
        json={"query": query, "texts": docs, "raw_scores": True},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=300,
    )
    assert response.status_code == 200, response.text
    raw = {r["index"]: r["score"] for r in response.json()}
    logits = CrossEncoderReranker(rerank_model_path, activation="identity").score(query, docs)
    assert [raw[i] for i in range(len(docs))] == pytest.approx(logits, abs=1e-3)
    assert any(s < 0 for s in raw.values())  # logits, not 0..1 probabilities


def test_llamaindex_tei_postprocessor(served, cross_encoder, cases):
    query, docs = cases[0]
    reranker = TextEmbeddingInference(base_url=served, top_n=TOP, auth_token=f"Bearer {KEY}", timeout=300)
    out = reranker.postprocess_nodes(nodes(docs), query_str=query)
    check([(int(n.node.id_), n.score) for n in out], local(cross_encoder, query, docs), v2_scores(served, query, docs))


# -- /v1/rerank: Jina, Voyage, Infinity -------------------------------------------------------------------
def test_llamaindex_jina_postprocessor(served, cross_encoder, cases):
    query, docs = cases[1]
    reranker = JinaRerank(base_url=f"{served}/v1", api_key=KEY, top_n=TOP)
    out = reranker.postprocess_nodes(nodes(docs), query_str=query)
    check([(int(n.node.id_), n.score) for n in out], local(cross_encoder, query, docs), v2_scores(served, query, docs))


def test_voyageai_sdk(served, cross_encoder, cases):
    query, docs = cases[0]
    client = voyageai.Client(api_key=KEY, base_url=f"{served}/v1", max_retries=0, timeout=300)
    out = client.rerank(query, docs, model="rerank-2", top_k=TOP)
    check(
        [(r.index, r.relevance_score) for r in out.results],
        local(cross_encoder, query, docs),
        v2_scores(served, query, docs),
    )
    assert [r.document for r in out.results] == [docs[r.index] for r in out.results]
    assert out.total_tokens > 0


def test_langchain_voyageai_rerank_sync_and_async(served, cross_encoder, cases):
    query, docs = cases[1]
    want, v2 = local(cross_encoder, query, docs), v2_scores(served, query, docs)
    reranker = VoyageAIRerank(api_key=KEY, base_url=f"{served}/v1", model="rerank-2", top_k=TOP)
    documents = [Document(page_content=d, metadata={"i": i}) for i, d in enumerate(docs)]
    out = reranker.compress_documents(documents, query)
    check([(d.metadata["i"], d.metadata["relevance_score"]) for d in out], want, v2)
    import asyncio

    out = asyncio.run(reranker.acompress_documents(documents, query))  # aiohttp, not requests
    check([(d.metadata["i"], d.metadata["relevance_score"]) for d in out], want, v2)


def test_infinity_client(served, cross_encoder, cases):
    query, docs = cases[0]
    client = AuthenticatedClient(base_url=f"{served}/v1", token=KEY, timeout=httpx.Timeout(300))
    result = infinity_rerank.sync(
        client=client, body=RerankInput(query=query, documents=docs, top_n=TOP, return_documents=True)
    )
    assert isinstance(result, ReRankResult), result
    check(
        [(r.index, r.relevance_score) for r in result.results],
        local(cross_encoder, query, docs),
        v2_scores(served, query, docs),
    )
    assert [r.document for r in result.results] == [docs[r.index] for r in result.results]  # strings, as Infinity
    assert result.usage.total_tokens > 0 and result.model

    raw = infinity_rerank.sync(client=client, body=RerankInput(query=query, documents=docs, raw_scores=True))
    assert isinstance(raw, ReRankResult)
    v2 = v2_scores(served, query, docs)
    assert [r.relevance_score for r in raw.results] == pytest.approx(
        [math.log(v2[r.index] / (1 - v2[r.index])) for r in raw.results], abs=1e-3
    )


def test_langchain_community_infinity_rerank(served, cross_encoder, cases):
    """LangChain's InfinityRerank takes an infinity_client ``Client`` (its own default is localhost:7997)."""
    from infinity_client import Client
    from langchain_community.document_compressors import InfinityRerank

    query, docs = cases[1]
    client = Client(base_url=f"{served}/v1", headers={"Authorization": f"Bearer {KEY}"}, timeout=httpx.Timeout(300))
    documents = [Document(page_content=d, metadata={"i": i}) for i, d in enumerate(docs)]
    out = InfinityRerank(client=client, top_n=TOP).compress_documents(documents, query)
    want, v2 = local(cross_encoder, query, docs), v2_scores(served, query, docs)
    check([(d.metadata["i"], d.metadata["relevance_score"]) for d in out], want, v2)


# -- shapes and errors, model-free --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fake() -> TestClient:
    return TestClient(create_app(FakeReranker(), max_documents=3, max_body_bytes=2048))


DOCS = ["bananas are yellow", "aspirin and stroke", "aspirin"]


def test_tei_shape_with_the_fake(fake):
    ranks = fake.post("/rerank", json={"query": "aspirin stroke", "texts": DOCS}).json()
    assert ranks == [{"index": 1, "score": 1.0}, {"index": 2, "score": 0.5}, {"index": 0, "score": 0.0}]


def test_v1_shape_with_the_fake(fake):
    docs = [DOCS[0], {"text": DOCS[1]}, DOCS[2]]  # Jina and Cohere v1 also take {"text": ...}
    body = {"query": "aspirin stroke", "documents": docs, "top_n": 2, "return_documents": True, "model": "x"}
    payload = fake.post("/v1/rerank", json=body).json()
    assert [(r["index"], r["relevance_score"], r["document"]) for r in payload["results"]] == [
        (1, 1.0, {"text": DOCS[1]}),
        (2, 0.5, {"text": DOCS[2]}),
    ]
    assert payload["data"] == [
        {"index": 1, "relevance_score": 1.0, "document": DOCS[1]},
        {"index": 2, "relevance_score": 0.5, "document": DOCS[2]},
    ]
    assert payload["usage"]["total_tokens"] == payload["usage"]["prompt_tokens"] > 0
    assert payload["model"] == FakeReranker.name
    voyage = fake.post("/v1/rerank", json={"query": "aspirin stroke", "documents": DOCS, "top_k": 1}).json()
    assert voyage["data"] == [{"index": 1, "relevance_score": 1.0}]
    infinity = fake.post("/v1/rerank", json={**body, "raw_scores": False}).json()
    assert [r["document"] for r in infinity["results"]] == [DOCS[1], DOCS[2]]


TEI_BAD = [
    ({"texts": ["a"]}, 400, "Validation", "query"),
    ({"query": "q"}, 400, "Validation", "texts"),
    ({"query": "q", "texts": "a"}, 400, "Validation", "list of strings"),
    ({"query": "q", "texts": []}, 400, "Empty", "empty"),
    ({"query": "q", "texts": [{"text": "a"}]}, 400, "Validation", "texts[0]"),
    ({"query": "q", "texts": ["a"] * 4}, 413, "Validation", "limit of 3"),
    ({"query": "q", "texts": ["a"], "raw_scores": "yes"}, 400, "Validation", "raw_scores"),
    ({"query": "q", "texts": ["a"], "raw_scores": True}, 400, "Validation", "cannot be inverted"),
    ({"query": "q", "texts": ["a"], "truncation_direction": "up"}, 400, "Validation", "truncation_direction"),
    ({"query": "q", "texts": ["a"], "truncation_direction": "Left"}, 400, "Validation", "not supported"),
    (["q", ["a"]], 400, "Validation", "JSON object"),
]


@pytest.mark.parametrize(("body", "status", "error_type", "fragment"), TEI_BAD)
def test_tei_errors_in_tei_shape(fake, body, status, error_type, fragment):
    response = fake.post("/rerank", json=body)
    assert response.status_code == status
    payload = response.json()
    assert set(payload) == {"error", "error_type"} and payload["error_type"] == error_type
    assert fragment in payload["error"]


V1_BAD = [
    ({"documents": ["a"]}, 400, "query"),
    ({"query": "q", "documents": [7]}, 400, "documents[0]"),
    ({"query": "q", "documents": [{"title": "a"}]}, 400, "documents[0]"),
    ({"query": "q", "documents": ["a"] * 4}, 413, "limit of 3"),
    ({"query": "q", "documents": ["a"], "top_k": 0}, 400, "top_k"),
    ({"query": "q", "documents": ["a", "b"], "top_n": 1, "top_k": 2}, 400, "disagree"),
    ({"query": "q", "documents": ["a"], "return_documents": "yes"}, 400, "return_documents"),
    ({"query": "q", "documents": ["a"], "raw_scores": True}, 400, "cannot be inverted"),
]


@pytest.mark.parametrize(("body", "status", "fragment"), V1_BAD)
def test_v1_errors_carry_message_and_detail(fake, body, status, fragment):
    response = fake.post("/v1/rerank", json=body)
    assert response.status_code == status
    payload = response.json()
    assert set(payload) == {"message", "detail"} and payload["message"] == payload["detail"]
    assert fragment in payload["detail"]


@pytest.mark.parametrize("route", ["/rerank", "/v1/rerank"])
def test_malformed_and_oversized_bodies(fake, route):
    assert fake.post(route, content=b'{"query": "q", ', headers={"content-type": "application/json"}).status_code == 400
    too_big = fake.post(route, content=b"x" * 3000, headers={"content-type": "application/json"})
    assert too_big.status_code == 413 and "limit of 2048" in str(too_big.json())


def test_clients_see_the_server_errors():
    """Each client's own error path gets our message: Voyage's SDK and Jina's postprocessor read ``detail``."""
    with serve_in_thread(create_app(FakeReranker(), max_documents=2)) as url:
        client = voyageai.Client(api_key=KEY, base_url=f"{url}/v1", max_retries=0)
        with pytest.raises(voyageai.error.InvalidRequestError, match="top_k"):
            client.rerank("q", ["a"], model="rerank-2", top_k=0)
        with pytest.raises(voyageai.error.APIError, match="limit of 2"):
            client.rerank("q", ["a", "b", "c"], model="rerank-2")
        with pytest.raises(RuntimeError, match="limit of 2"):
            JinaRerank(base_url=f"{url}/v1", api_key=KEY, top_n=1).postprocess_nodes(
                nodes(["a", "b", "c"]), query_str="q"
            )


# -- the shared limits: 401, 429, 504, 503 on the new routes -------------------------------------------
class GatedReranker(FakeReranker):
    """FakeReranker whose calls wait for ``gate``: a slow model the test controls."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()

    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        assert self.gate.wait(timeout=60), "the test never opened the gate"
        return super().score(query, texts)


BODIES = {"/rerank": {"query": "q", "texts": ["q a"]}, "/v1/rerank": {"query": "q", "documents": ["q a"]}}
MESSAGE = {"/rerank": lambda p: (p["error_type"], p["error"]), "/v1/rerank": lambda p: (None, p["detail"])}


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.mark.parametrize("route", list(BODIES))
def test_auth_queue_timeout_and_draining_apply_to_the_route(route):
    reranker = GatedReranker()
    app = create_app(reranker, api_key=KEY, max_queue=1, request_timeout=1.0)
    auth = {"Authorization": f"Bearer {KEY}"}
    with serve_in_thread(app) as url:
        wait_for(lambda: app.state.service.ready, "the fake to load")
        assert httpx.post(f"{url}{route}", json=BODIES[route]).status_code == 401
        reranker.gate.clear()  # the model stalls: one request fills the queue, the next is refused
        with ThreadPoolExecutor(1) as pool:
            stuck = pool.submit(httpx.post, f"{url}{route}", json=BODIES[route], headers=auth, timeout=60)
            wait_for(lambda: app.state.stats["in_progress"] == 1, "the first request to be admitted")
            full = httpx.post(f"{url}{route}", json=BODIES[route], headers=auth, timeout=60)
            timed_out = stuck.result()
        reranker.gate.set()
        app.state.service.draining = True  # what the first SIGTERM does
        draining = httpx.post(f"{url}{route}", json=BODIES[route], headers=auth, timeout=60)
    expected = [
        (full, 429, "Overloaded", "capacity"),
        (timed_out, 504, "Backend", "timed out"),
        (draining, 503, "Unhealthy", "shutting down"),
    ]
    for response, status, tei_type, fragment in expected:
        assert response.status_code == status
        assert int(response.headers["retry-after"]) >= 1
        error_type, message = MESSAGE[route](response.json())
        assert fragment in message and error_type in (None, tei_type)
