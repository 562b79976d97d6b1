"""`rerankers:<model>[:<type>]` names and RerankersReranker plumbing, with a fake ranker: no weights, no library
needed (tests/test_rerankers_backend.py runs the real library)."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from twostage_integrations import Hit
from twostage_integrations.errors import InvalidParameterError, ModelNotFoundError, RerankScoresError
from twostage_integrations.rerank import make_reranker
from twostage_integrations.rerank.lazy import LazyReranker
from twostage_integrations.rerank.rerankers import MODEL_TYPES, RerankersReranker, parse_rerankers_name


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("rerankers:org/model", ("org/model", None)),
        ("rerankers:org/model:colbert", ("org/model", "colbert")),
        ("rerankers:flashrank", ("flashrank", None)),  # a library family name, not a model:type pair
        ("rerankers:ms-marco-MiniLM-L-12-v2:flashrank", ("ms-marco-MiniLM-L-12-v2", "flashrank")),
        ("rerankers:/abs/path:cross-encoder", ("/abs/path", "cross-encoder")),
        ("rerankers:/data/run:3:cross-encoder", ("/data/run:3", "cross-encoder")),
        ("rerankers:/data/run:3", ("/data/run:3", None)),  # a path with ':' and no type
        ("rerankers:jina-reranker-v2-base-multilingual:jina", ("jina-reranker-v2-base-multilingual", "jina")),
    ],
)
def test_parse_splits_the_type_off_the_end_only_when_known(spec, expected):
    assert parse_rerankers_name(spec) == expected


def test_parse_keeps_a_colon_folder_that_exists(tmp_path):
    folder = tmp_path / "ckpt:step-5"
    folder.mkdir()
    assert parse_rerankers_name(f"rerankers:{folder}") == (str(folder), None)
    assert parse_rerankers_name(f"rerankers:{folder}:t5") == (str(folder), "t5")


def test_parse_rejects_an_unknown_type_and_lists_the_known_ones(tmp_path):
    with pytest.raises(InvalidParameterError, match=r"unknown rerankers model type 'crossencoder'.*cross-encoder, t5"):
        parse_rerankers_name("rerankers:org/model:crossencoder")
    # the folder exists without the suffix: the suffix was meant as a type
    with pytest.raises(InvalidParameterError, match="unknown rerankers model type 'bert'"):
        parse_rerankers_name(f"rerankers:{tmp_path}:bert")


@pytest.mark.parametrize("spec", ["rerankers:", "rerankers:  ", "rerankers::cross-encoder"])
def test_parse_rejects_a_missing_model(spec):
    with pytest.raises(InvalidParameterError, match=r"names no model; write rerankers:<model>\[:<type>\]"):
        parse_rerankers_name(spec)


def test_model_types_are_unique_and_not_paths():
    assert len(set(MODEL_TYPES)) == len(MODEL_TYPES)
    assert "cross-encoder" in MODEL_TYPES
    assert all(":" not in t and "/" not in t for t in MODEL_TYPES)


def test_make_reranker_refuses_a_backend_for_rerankers(monkeypatch):
    monkeypatch.setenv("TWOSTAGE_RERANK_BACKEND", "onnx")  # the env var alone is not an explicit choice...
    with pytest.raises(ModelNotFoundError, match="/no/such/model"):
        make_reranker("rerankers:/no/such/model:cross-encoder")
    with pytest.raises(InvalidParameterError, match="applies to our cross-encoders"):  # ...an argument is
        make_reranker("rerankers:/no/such/model:cross-encoder", backend="onnx")


def test_lazy_reranker_checks_the_folder_inside_the_spec(tmp_path):
    lazy = LazyReranker(f"rerankers:{tmp_path}:cross-encoder")  # the spec has 2+ '/', but the folder exists
    assert not lazy.loaded
    with pytest.raises(ModelNotFoundError, match="/no/such/model"):
        LazyReranker("rerankers:/no/such/model:cross-encoder")


def test_import_stays_free_of_torch_and_rerankers():
    code = (
        "import sys, twostage_integrations, twostage_integrations.rerank.rerankers\n"
        "assert twostage_integrations.RerankersReranker.__name__ == 'RerankersReranker'\n"
        "print(sorted(m for m in ('torch', 'rerankers', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"


# -- a ready ranker object, faked ----------------------------------------------------------------------------
class _Doc:
    def __init__(self, text: str, doc_id: object) -> None:
        self.text, self.doc_id = text, doc_id


class _Result:
    def __init__(self, doc: _Doc, score: float | None, rank: int | None) -> None:
        self.document, self.score, self.rank = doc, score, rank


class _Ranked:
    def __init__(self, results: list[_Result], has_scores: bool) -> None:
        self.results, self.has_scores = results, has_scores


class FakeRanker:
    """Scores = passage length, best first, as rerankers' pointwise rankers return them."""

    def __init__(self, *, drop_last: bool = False) -> None:
        self.drop_last = drop_last
        self.calls: list[list[object]] = []

    def _rank(self, query: str, docs: list[str], doc_ids: list[object]) -> _Ranked:
        self.calls.append(list(doc_ids))
        pairs = sorted(zip(docs, doc_ids, strict=True), key=lambda p: -len(p[0]))
        results = [_Result(_Doc(t, i), float(len(t)), r) for r, (t, i) in enumerate(pairs, start=1)]
        return _Ranked(results[:-1] if self.drop_last else results, True)

    def rank(self, query: str, docs: list[str], doc_ids: list[object] | None = None) -> _Ranked:
        return self._rank(query, docs, doc_ids or list(range(len(docs))))

    async def rank_async(self, query: str, docs: list[str], doc_ids: list[object] | None = None) -> _Ranked:
        return self._rank(query, docs, doc_ids or list(range(len(docs))))


class RankGPTRanker(FakeRanker):
    """Listwise: an order, no scores, ranks counted from 0 as RankLLM does."""

    def _rank(self, query: str, docs: list[str], doc_ids: list[object]) -> _Ranked:
        pairs = sorted(zip(docs, doc_ids, strict=True), key=lambda p: len(p[0]))  # shortest first
        return _Ranked([_Result(_Doc(t, i), None, r) for r, (t, i) in enumerate(pairs)], False)


HITS = [Hit(id="same", text="bb"), Hit(id="same", text="dddd"), Hit(id="x", text="a"), Hit(id="y", text="ccc")]


def test_ready_ranker_scores_and_order_are_kept_and_matched_by_position():
    fake = FakeRanker()
    rr = RerankersReranker(fake)
    out = rr.rerank("q", HITS, top_k=3)
    assert [h.text for h in out] == ["dddd", "ccc", "bb"]  # duplicate hit ids do not confuse the mapping
    assert [h.rerank_score for h in out] == [float(len(h.text)) for h in out]
    assert [h.rerank_rank for h in out] == [1, 2, 3]
    assert fake.calls == [[0, 1, 2, 3]]  # positions, not texts or hit ids, are the library's doc ids
    assert rr.score_kind == "rerankers" and rr.name == "rerankers:FakeRanker"
    assert HITS[0].rerank_score is None  # input not mutated


def test_async_gives_the_same_hits_as_sync():
    rr = RerankersReranker(FakeRanker())
    assert asyncio.run(rr.arerank("q", HITS, top_k=2)) == rr.rerank("q", HITS, top_k=2)
    assert asyncio.run(rr.arerank("q", [])) == []


def test_listwise_ranker_scores_by_position():
    rr = RerankersReranker(RankGPTRanker())
    assert rr.score_kind == "rerankers_rank"
    out = rr.rerank("q", HITS)
    assert [h.text for h in out] == ["a", "bb", "ccc", "dddd"]
    assert [h.rerank_score for h in out] == [1.0, 0.5, 1 / 3, 0.25]


def test_a_ranker_that_drops_a_document_breaks_the_contract():
    with pytest.raises(RerankScoresError, match="returned 3 results for 4 documents"):
        RerankersReranker(FakeRanker(drop_last=True)).rerank("q", HITS)


def test_ready_ranker_takes_no_options_and_junk_is_refused():
    with pytest.raises(InvalidParameterError, match="a ready ranker takes none"):
        RerankersReranker(FakeRanker(), model_type="cross-encoder")
    with pytest.raises(InvalidParameterError, match=r"rerankers.Reranker\(\.\.\.\), got int"):
        RerankersReranker(42)
