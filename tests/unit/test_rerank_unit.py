"""Ordering rules of stage 2, independent of any model."""

from __future__ import annotations

import copy

from twostage_integrations import BaseReranker, Hit, Reranker
from twostage_integrations.rerank import apply_scores


def make_hits(n: int) -> list[Hit]:
    return [
        Hit(
            id=f"d{i}",
            text=f"text {i}",
            metadata={"i": i},
            score=1 - i / 10,
            recall_score=1 - i / 10,
            recall_rank=i + 1,
        )
        for i in range(n)
    ]


def test_orders_negative_and_zero_scores_correctly():
    hits = make_hits(4)
    out = apply_scores(hits, [-2.0, 0.0, -0.5, 3.0])
    assert [h.id for h in out] == ["d3", "d1", "d2", "d0"]
    assert [h.rerank_rank for h in out] == [1, 2, 3, 4]
    assert [h.score for h in out] == [3.0, 0.0, -0.5, -2.0]
    assert [h.recall_rank for h in out] == [4, 2, 3, 1]


def test_ties_keep_recall_order_and_top_k_cuts():
    out = apply_scores(make_hits(4), [0.5, 0.9, 0.5, 0.5], top_k=3)
    assert [h.id for h in out] == ["d1", "d0", "d2"]


def test_inputs_are_not_mutated():
    hits = make_hits(3)
    snapshot = copy.deepcopy(hits)
    out = apply_scores(hits, [0.1, 0.2, 0.3])
    out[0].metadata["changed"] = True
    assert hits == snapshot


class LengthReranker(BaseReranker):
    """A model-free reranker (longer text = more relevant) to exercise the base class."""

    name = "length"

    def score(self, query, texts):
        return [float(len(t)) for t in texts]


async def test_base_reranker_sync_and_async_agree():
    hits = [Hit(id=str(i), text="x" * n, recall_rank=i + 1) for i, n in enumerate([3, 9, 1, 5])]
    r = LengthReranker()
    assert isinstance(r, Reranker)
    sync = r.rerank("q", hits, top_k=2)
    assert [h.id for h in sync] == ["1", "3"]
    assert [h.id for h in await r.arerank("q", hits, top_k=2)] == ["1", "3"]
    assert r.rerank("q", []) == []


def test_score_pairs_mixes_queries_and_keeps_input_order():
    class Lengths(BaseReranker):
        name = "lengths"

        def __init__(self):
            self.calls = []

        def score(self, query, texts):
            self.calls.append(query)
            return [float(len(query) * 100 + len(t)) for t in texts]  # a plumbing fake, not a model

    r = Lengths()
    pairs = [("ab", "x"), ("abc", "yy"), ("ab", "zzz"), ("abc", "")]
    assert r.score_pairs(pairs) == [201.0, 302.0, 203.0, 300.0]
    assert r.calls == ["ab", "abc"]  # one score() call per distinct query
    assert r.score_pairs([]) == []
