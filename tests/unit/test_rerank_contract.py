"""The stage-2 contract, checked with hypothesis for every reranker and wrapper (no model weights).

For any hits and any ``top_k``: exactly ``min(top_k, n)`` hits come back (a cascade also caps at its stages'
``keep``), their ids are a subset of the input ids and unique, ``score`` and ``rerank_score`` are
finite and sorted best first, ``rerank_rank`` is 1..len, and the caller's hit objects are left as they were.
The scorers are fakes (``FakeScorer``, ``FakeCohereClient``): this is plumbing, not quality.
"""

from __future__ import annotations

import asyncio
import copy
import math
from collections.abc import Callable, Sequence
from types import SimpleNamespace

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twostage_integrations import BaseReranker, Cascade, FusedReranker, Hit
from twostage_integrations.errors import (
    APIKeyError,
    InvalidParameterError,
    RerankAPIError,
    RerankScoresError,
    TwoStageError,
)
from twostage_integrations.rerank import apply_scores
from twostage_integrations.rerank.fallback import FallbackReranker

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@st.composite
def hit_lists(draw) -> list[Hit]:
    ids = draw(st.lists(st.text("abcdefgh0123", min_size=1, max_size=4), unique=True, max_size=25))
    scores = draw(st.lists(finite, min_size=len(ids), max_size=len(ids)))
    return [
        Hit(
            id=doc_id,
            text=f"text of {doc_id}",
            metadata={"n": i},
            score=s,
            recall_score=s,
            recall_rank=i + 1,
        )
        for i, (doc_id, s) in enumerate(zip(ids, scores, strict=True))
    ]


top_ks = st.one_of(st.none(), st.integers(min_value=1, max_value=30))


class FakeScorer(BaseReranker):
    """Scores a text by a seeded hash, rounded so ties happen; no model."""

    def __init__(self, seed: int = 0, name: str = "fake") -> None:
        self.seed, self.name = seed, name

    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        return [float((hash((self.seed, t)) % 7) - 3) for t in texts]


class FailingReranker(BaseReranker):
    """Always fails the way a remote model does."""

    name = "down"

    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        raise RerankAPIError("fake outage", status_code=503)


class NaNScorer(BaseReranker):
    """Returns NaN for every text: a broken model."""

    name = "nan"

    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        return [math.nan] * len(texts)


class FakeCohereClient:
    """Stands in for cohere.ClientV2: answers like /v2/rerank, or fails like a refused connection."""

    def __init__(self, *, fail: bool = False) -> None:
        self.fail, self.calls = fail, 0

    def rerank(self, *, model, query, documents, **_):
        self.calls += 1
        if self.fail:
            raise httpx.ConnectError("connection refused")
        scored = [(i, (hash(d) % 1000) / 1000) for i, d in enumerate(documents)]
        scored.sort(key=lambda p: -p[1])
        return SimpleNamespace(results=[SimpleNamespace(index=i, relevance_score=s) for i, s in scored])


class FakeAsyncCohereClient(FakeCohereClient):
    """Stands in for cohere.AsyncClientV2."""

    async def rerank(self, **kwargs):
        return super().rerank(**kwargs)


def cohere(*, fail: bool, on_error: str = "fallback"):
    from twostage_integrations import CohereReranker

    co = CohereReranker(api_key="fake-key", base_url="http://127.0.0.1:9", max_retries=0, on_error=on_error)
    fake, fake_async = FakeCohereClient(fail=fail), FakeAsyncCohereClient(fail=fail)
    co._clients = {url: fake for url in co.base_urls}
    co._async_client = lambda url: fake_async
    return co


# name -> (factory, cap): cap is what a cascade's stages keep at most (None: no cap besides top_k).
RERANKERS: dict[str, tuple[Callable[[], object], int | None]] = {
    "base-subclass": (lambda: FakeScorer(), None),
    "fused-rrf": (lambda: FusedReranker(FakeScorer(), weight=0.7), None),
    "fused-minmax": (lambda: FusedReranker(FakeScorer(), weight=0.3, method="minmax"), None),
    "cascade": (lambda: Cascade([(FakeScorer(1), 10), (FakeScorer(2), None)]), 10),
    "fallback-primary-ok": (lambda: FallbackReranker(FakeScorer()), None),
    "fallback-to-input-order": (lambda: FallbackReranker(FailingReranker()), None),
    "fallback-to-second-reranker": (lambda: FallbackReranker(FailingReranker(), FakeScorer(3)), None),
    "fallback-both-fail": (lambda: FallbackReranker(FailingReranker(), NaNScorer()), None),
    "fused-over-fallback": (lambda: FusedReranker(FallbackReranker(FailingReranker()), method="minmax"), None),
    "cascade-with-fallback-stage": (
        lambda: Cascade([(FallbackReranker(FailingReranker()), 12), (FakeScorer(4), 6)]),
        6,
    ),
    "cohere-ok": (lambda: cohere(fail=False), None),
    "cohere-fallback": (lambda: cohere(fail=True), None),
    "fused-over-cohere-fallback": (lambda: FusedReranker(cohere(fail=True)), None),
}


_BUILT: dict[str, object] = {}


def check_contract(hits: list[Hit], before: list[Hit], out: list[Hit], top_k: int | None, cap=None) -> None:
    assert len(out) == min(top_k or len(hits), cap or len(hits), len(hits))
    ids = [h.id for h in out]
    assert len(set(ids)) == len(ids) and set(ids) <= {h.id for h in hits}
    for field in ("score", "rerank_score"):
        values = [getattr(h, field) for h in out]
        assert all(isinstance(v, float) and math.isfinite(v) for v in values), (field, values)
        assert values == sorted(values, reverse=True), (field, values)
    assert [h.rerank_rank for h in out] == list(range(1, len(out) + 1))
    assert hits == before  # the caller's hits (and their metadata) are unchanged...
    assert not {id(h) for h in out} & {id(h) for h in hits}  # ...and never handed back to be mutated
    assert not {id(h.metadata) for h in out} & {id(h.metadata) for h in hits}


@pytest.mark.parametrize("kind", sorted(RERANKERS))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hits=hit_lists(), top_k=top_ks)
def test_every_reranker_keeps_the_contract(kind, hits, top_k):
    factory, cap = RERANKERS[kind]
    if kind not in _BUILT:  # one instance per kind: rerankers are stateless between calls, and building is slow
        _BUILT[kind] = factory()
    reranker = _BUILT[kind]
    before = copy.deepcopy(hits)
    check_contract(hits, before, reranker.rerank("a query", hits, top_k), top_k, cap)
    check_contract(hits, before, asyncio.run(reranker.arerank("a query", hits, top_k)), top_k, cap)


@settings(max_examples=30, deadline=None)
@given(hits=hit_lists().filter(bool), top_k=top_ks)
def test_fallback_marks_every_hit_it_did_not_rerank(hits, top_k):
    out = FallbackReranker(FailingReranker()).rerank("q", hits, top_k)
    assert [h.id for h in out] == [h.id for h in hits][: len(out)]  # the input order
    assert all(h.metadata["rerank_fallback"] is True for h in out)
    assert all("fake outage" in h.metadata["rerank_fallback_reason"] for h in out)
    ok = FallbackReranker(FakeScorer()).rerank("q", hits, top_k)
    assert [h.id for h in ok] == [h.id for h in FakeScorer().rerank("q", hits, top_k)]
    assert not any("rerank_fallback" in h.metadata for h in ok)


def test_fallback_to_a_second_reranker_says_so():
    hits = [Hit(id=str(i), text=f"t{i}", recall_rank=i + 1) for i in range(5)]
    out = FallbackReranker(FailingReranker(), FakeScorer(3, name="backup")).rerank("q", hits)
    assert [h.id for h in out] == [h.id for h in FakeScorer(3).rerank("q", hits)]
    assert all("ordered by backup" in h.metadata["rerank_fallback_reason"] for h in out)


def test_fallback_does_not_hide_caller_errors():
    hits = [Hit(id="a", text="A")]
    with pytest.raises(InvalidParameterError):
        FallbackReranker(FailingReranker()).rerank("q", hits, top_k=0)
    with pytest.raises(TwoStageError):
        FallbackReranker(FailingReranker()).rerank("  ", hits)

    class RejectedKey(BaseReranker):
        name = "bad-key"

        def score(self, query, texts):
            raise APIKeyError("rejected")

    with pytest.raises(APIKeyError):  # not a transient failure: never silently degraded
        FallbackReranker(RejectedKey()).rerank("q", hits)


def test_cohere_fallback_goes_through_the_wrapper():
    co = cohere(fail=True)
    hits = [Hit(id=str(i), text=f"t{i}", recall_rank=i + 1) for i in range(4)]
    out = co.rerank("q", hits, top_k=3)
    assert [(h.id, h.rerank_rank) for h in out] == [("0", 1), ("1", 2), ("2", 3)]
    assert all(h.metadata["rerank_fallback"] and "ConnectError" in h.metadata["rerank_fallback_reason"] for h in out)
    with pytest.raises(RerankAPIError, match="connection failed"):
        cohere(fail=True, on_error="raise").rerank("q", hits)
    healthy = cohere(fail=False)
    for out in (healthy.rerank("q", hits), asyncio.run(healthy.arerank("q", hits))):
        assert not any("rerank_fallback" in h.metadata for h in out)  # the fake client really answered
    assert healthy._clients[healthy.base_url].calls == 1 and healthy._async_client(healthy.base_url).calls == 1


@settings(max_examples=40, deadline=None)
@given(hits=hit_lists().filter(bool), data=st.data())
def test_apply_scores_rejects_wrong_counts_and_non_finite_scores(hits, data):
    scores = data.draw(st.lists(finite, min_size=len(hits), max_size=len(hits)))
    with pytest.raises(RerankScoresError, match="scores for"):
        apply_scores(hits, scores + [0.0])
    bad = list(scores)
    bad[data.draw(st.integers(0, len(hits) - 1))] = data.draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    with pytest.raises(RerankScoresError, match="non-finite"):
        apply_scores(hits, bad)
    assert issubclass(RerankScoresError, RuntimeError)  # callers that caught the old bare RuntimeError still do
