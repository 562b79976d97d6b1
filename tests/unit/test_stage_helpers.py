"""The shared helpers: a list of stages -> :class:`Cascade` (``as_cascade``), and the score kinds a pipeline's hits
report (``pipeline_score_kinds``), as the pipeline, ``evaluate``, ``twostage eval``/``query`` and the adapters use
them."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pytest

from twostage_integrations import Hit, TwoStagePipeline
from twostage_integrations.errors import InvalidParameterError
from twostage_integrations.evaluation.runner import _stages
from twostage_integrations.rerank.base import BaseReranker
from twostage_integrations.rerank.cascade import Cascade, as_cascade
from twostage_integrations.rerank.fusion import FusedReranker
from twostage_integrations.scores import hit_score_kind, pipeline_score_kinds
from twostage_integrations.testing import FakeReranker


class _PlainReranker(BaseReranker):
    """A custom reranker that declares no score kind of its own (inherits BaseReranker's)."""

    name = "plain"

    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        return [float(len(t)) for t in texts]


class _BareRecall:
    """A custom stage 1 without ``score_kind``."""

    def search(self, query: str, limit: int, **kwargs: object) -> list[Hit]:
        return [Hit(id=str(i), text=f"passage {i}", score=1.0 / (i + 1)) for i in range(limit)]


class _CosineRecall(_BareRecall):
    score_kind = "cosine"


# -- as_cascade ---------------------------------------------------------------------------------------------------
def test_a_list_of_pairs_and_bare_rerankers_becomes_those_stages():
    a, b, c = FakeReranker(), FakeReranker(), _PlainReranker()
    cascade = as_cascade([(a, 30), (b, None), c])
    assert isinstance(cascade, Cascade) and cascade.stages == [(a, 30), (b, None), (c, None)]
    assert as_cascade(((a, 5),)).stages == [(a, 5)]  # a tuple of stages too


def test_a_single_reranker_is_one_stage_that_keeps_all():
    reranker = FakeReranker()
    assert as_cascade(reranker).stages == [(reranker, None)]


def test_a_cascade_is_returned_as_is():
    cascade = Cascade([(FakeReranker(), 3)])
    assert as_cascade(cascade) is cascade


@pytest.mark.parametrize("stages", [[], (), "fake-word-overlap", [("not a reranker", 3)], [(FakeReranker(), 0)]])
def test_empty_or_bad_stages_are_refused(stages):
    with pytest.raises(InvalidParameterError):
        as_cascade(stages)


def test_the_pipeline_runs_a_list_as_a_cascade_and_keeps_a_single_reranker():
    a, b = FakeReranker(), FakeReranker()
    pipe = TwoStagePipeline(_BareRecall(), [(a, 4), (b, None)], limit=8, top_k=2)
    assert isinstance(pipe.reranker, Cascade) and pipe.reranker.stages == [(a, 4), (b, None)]
    assert len(pipe.search("passage")) == 2 and a.calls == [("passage", 8)] and b.calls == [("passage", 4)]
    assert TwoStagePipeline(_BareRecall(), a).reranker is a
    with pytest.raises(InvalidParameterError, match="non-empty"):
        TwoStagePipeline(_BareRecall(), [])


def test_evaluate_reads_none_and_an_empty_list_as_recall_only():
    reranker = FakeReranker()
    assert _stages(None) is None and _stages([]) is None
    assert _stages(reranker).stages == [(reranker, None)]  # type: ignore[union-attr]
    assert _stages([(reranker, 10)]).stages == [(reranker, 10)]  # type: ignore[union-attr]


# -- pipeline_score_kinds -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("recall", "reranker", "kinds"),
    [
        (_CosineRecall(), FakeReranker(), ("cosine", "fake_overlap")),
        (_CosineRecall(), None, ("cosine", None)),
        (_BareRecall(), None, ("recall", None)),
        (_BareRecall(), _PlainReranker(), ("recall", "rerank")),
        (_CosineRecall(), [(FakeReranker(), 5), (FusedReranker(FakeReranker()), None)], ("cosine", "fused_rrf")),
    ],
)
def test_pipeline_score_kinds(recall, reranker, kinds):
    assert pipeline_score_kinds(TwoStagePipeline(recall, reranker)) == kinds


def test_each_hit_gets_its_stage_kind_from_the_pipeline_kinds():
    with_rerank = TwoStagePipeline(_CosineRecall(), FakeReranker(), limit=4, top_k=2)
    recall_kind, rerank_kind = pipeline_score_kinds(with_rerank)
    hits = with_rerank.search("passage 1")
    assert [hit_score_kind(h, recall_kind=recall_kind, rerank_kind=rerank_kind) for h in hits] == ["fake_overlap"] * 2
    fell_back = dataclasses.replace(hits[0], metadata={"rerank_fallback": True})
    assert hit_score_kind(fell_back, recall_kind=recall_kind, rerank_kind=rerank_kind) == "fallback_recall"
    recall_only = TwoStagePipeline(_CosineRecall(), None, limit=4, top_k=2)
    recall_kind, rerank_kind = pipeline_score_kinds(recall_only)
    hits = recall_only.search("passage 1")
    assert [hit_score_kind(h, recall_kind=recall_kind, rerank_kind=rerank_kind) for h in hits] == ["cosine"] * 2
