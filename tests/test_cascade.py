"""Multi-stage cascades (counts per stage) and fusion of reranker order with recall order."""

from __future__ import annotations

import pytest

from twostage_integrations import Hit, TwoStagePipeline
from twostage_integrations.errors import InvalidParameterError
from twostage_integrations.rerank.cascade import Cascade
from twostage_integrations.rerank.fusion import FusedReranker


@pytest.fixture(scope="module")
def query_and_hits(scifact_subset):
    """One SciFact claim and 12 passages in a fixed "recall" order: its relevant abstracts sit at the bottom."""
    doc_ids, texts, _, queries, qrels = scifact_subset
    qid = next(iter(queries))
    text_of = dict(zip(doc_ids, texts, strict=True))
    relevant = list(qrels[qid])
    others = [d for d in doc_ids if d not in qrels[qid]][: 12 - len(relevant)]
    order = others + relevant
    hits = [
        Hit(id=d, text=text_of[d], score=1.0 - i / 12, recall_score=1.0 - i / 12, recall_rank=i + 1)
        for i, d in enumerate(order)
    ]
    return queries[qid], hits, relevant


def test_cascade_keeps_counts_per_stage(cross_encoder, query_and_hits):
    query, hits, _ = query_and_hits
    cascade = Cascade([(cross_encoder, 8), (cross_encoder, 3)])
    first, second = cascade.run(query, hits)
    assert (first.n_in, first.n_out, second.n_in, second.n_out) == (12, 8, 8, 3)
    assert [h.id for h in second.hits] == [h.id for h in cross_encoder.rerank(query, hits, 3)]
    assert [h.rerank_rank for h in second.hits] == [1, 2, 3]
    assert cascade.rerank(query, hits, top_k=2) == second.hits[:2]  # top_k cuts the last stage further


def test_pipeline_takes_a_list_of_stages(cross_encoder, query_and_hits):
    query, hits, _ = query_and_hits

    class FixedRecall:  # a recall over the fixture's 20 hits, so the test controls stage 1 exactly
        def search(self, query, limit=20, *, where=None, where_document=None):
            return hits[:limit]

        async def asearch(self, query, limit=20, *, where=None, where_document=None):
            return hits[:limit]

    pipe = TwoStagePipeline(FixedRecall(), [(cross_encoder, 10), (cross_encoder, 5)], limit=20, top_k=4)
    assert isinstance(pipe.reranker, Cascade)
    result = pipe.run(query)
    assert len(result.candidates) == 12 and len(result.hits) == 4
    direct = Cascade([(cross_encoder, 10), (cross_encoder, 5)]).rerank(query, hits, top_k=4)
    assert [h.id for h in result.hits] == [h.id for h in direct]


async def test_async_cascade_matches_sync(cross_encoder, query_and_hits):
    query, hits, _ = query_and_hits
    cascade = Cascade([(cross_encoder, 6), (cross_encoder, None)])
    assert [h.id for h in await cascade.arerank(query, hits)] == [h.id for h in cascade.rerank(query, hits)]


def test_fusion_weight_zero_is_input_order_and_one_is_reranker_order(cross_encoder, query_and_hits):
    query, hits, _ = query_and_hits
    reranked = [h.id for h in cross_encoder.rerank(query, hits)]
    for method in ("rrf", "minmax"):
        assert [h.id for h in FusedReranker(cross_encoder, weight=0.0, method=method).rerank(query, hits)] == [
            h.id for h in hits
        ]
        assert [h.id for h in FusedReranker(cross_encoder, weight=1.0, method=method).rerank(query, hits)] == reranked


def test_fusion_scores_by_hand(cross_encoder, query_and_hits):
    query, hits, _ = query_and_hits
    model = {h.id: h for h in cross_encoder.rerank(query, hits)}
    w, k = 0.7, 60
    fused = FusedReranker(cross_encoder, weight=w, k=k).rerank(query, hits, top_k=5)
    by_hand = {h.id: w / (k + model[h.id].rerank_rank) + (1 - w) / (k + i) for i, h in enumerate(hits, start=1)}
    assert [h.id for h in fused] == sorted(by_hand, key=lambda d: -by_hand[d])[:5]
    assert [h.score for h in fused] == pytest.approx(sorted(by_hand.values(), reverse=True)[:5])

    scores = [model[h.id].score for h in hits]
    lo, hi = min(scores), max(scores)
    mixed = FusedReranker(cross_encoder, weight=0.5, method="minmax").rerank(query, hits, top_k=1)[0]
    i = next(n for n, h in enumerate(hits) if h.id == mixed.id)
    given = (hits[i].score - hits[-1].score) / (hits[0].score - hits[-1].score)
    assert mixed.score == pytest.approx(0.5 * (scores[i] - lo) / (hi - lo) + 0.5 * given)


def test_bad_cascade_and_fusion_arguments(cross_encoder):
    with pytest.raises(InvalidParameterError, match="non-empty list"):
        Cascade([])
    with pytest.raises(InvalidParameterError, match="keep of cascade stage 1"):
        Cascade([(cross_encoder, 5), (cross_encoder, 0)])
    with pytest.raises(InvalidParameterError, match="not a reranker"):
        Cascade([("cross-encoder", 5)])
    with pytest.raises(InvalidParameterError, match="between 0"):
        FusedReranker(cross_encoder, weight=1.5)
    with pytest.raises(InvalidParameterError, match="rrf, minmax"):
        FusedReranker(cross_encoder, method="mean")
