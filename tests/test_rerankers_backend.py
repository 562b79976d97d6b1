"""RerankersReranker with the real rerankers library: its cross-encoder type on our SciFact model must rank real
SciFact passages as our CrossEncoderReranker(backend="torch") does. About 30 pairs per model, so it stays fast."""

from __future__ import annotations

import asyncio
import math
import sys

import pytest

from twostage_integrations import CrossEncoderReranker, Hit
from twostage_integrations.errors import APIKeyError, InvalidParameterError, MissingDependencyError
from twostage_integrations.rerank import make_reranker
from twostage_integrations.rerank.rerankers import LISTWISE_RANKERS, MODEL_TYPES, RerankersReranker

rerankers_lib = pytest.importorskip("rerankers")

N_QUERIES, N_CANDIDATES, TOP_K = 3, 10, 5


@pytest.fixture(scope="module")
def candidates(scifact_subset) -> list[tuple[str, list[Hit]]]:
    """Per query: its relevant abstracts first, then distractors, N_CANDIDATES in all (real text, real ids)."""
    doc_ids, texts, _, queries, qrels = scifact_subset
    by_id = dict(zip(doc_ids, texts, strict=True))
    out = []
    for qid in list(queries)[:N_QUERIES]:
        relevant = [d for d in doc_ids if d in qrels[qid]]
        others = [d for d in doc_ids if d not in qrels[qid]][: N_CANDIDATES - len(relevant)]
        out.append((queries[qid], [Hit(id=d, text=by_id[d]) for d in others[:3] + relevant + others[3:]]))
    return out


@pytest.fixture(scope="module")
def ours(rerank_model_path) -> CrossEncoderReranker:
    return CrossEncoderReranker(rerank_model_path, backend="torch")


@pytest.fixture(scope="module")
def theirs(rerank_model_path) -> RerankersReranker:
    return RerankersReranker(rerank_model_path, model_type="cross-encoder")


def test_same_top_k_order_and_monotone_scores_as_our_cross_encoder(candidates, ours, theirs):
    assert theirs.score_kind == "rerankers" and ours.score_kind == "ce_sigmoid"
    for query, hits in candidates:
        a, b = ours.rerank(query, hits), theirs.rerank(query, hits)
        assert [h.id for h in b][:TOP_K] == [h.id for h in a][:TOP_K]
        assert [h.id for h in b] == [h.id for h in a]  # monotone scores: the whole order agrees too
        assert [h.rerank_rank for h in b] == list(range(1, len(hits) + 1))
        # the library's raw logit is the logit of our sigmoid score (same model, same 192-token cut)
        ours_by_id = {h.id: h.rerank_score for h in a}
        for h in b:
            assert 1 / (1 + math.exp(-h.rerank_score)) == pytest.approx(ours_by_id[h.id], abs=1e-4)


def test_async_matches_sync(candidates, theirs):
    query, hits = candidates[0]

    async def both():
        return await asyncio.gather(theirs.arerank(query, hits, top_k=TOP_K), theirs.arerank(query, hits[:1]))

    many, one = asyncio.run(both())
    assert many == theirs.rerank(query, hits, top_k=TOP_K)
    # one document: the library gives it no rank; ours is 1 and its score is the same number
    assert [(h.id, h.rerank_rank) for h in one] == [(hits[0].id, 1)]
    assert one[0].rerank_score == pytest.approx(theirs.score(query, [hits[0].text])[0], abs=1e-6)


def test_make_reranker_and_a_ready_ranker_give_the_same_hits(rerank_model_path, candidates, theirs, capsys):
    by_name = make_reranker(f"rerankers:{rerank_model_path}:cross-encoder")
    assert isinstance(by_name, RerankersReranker)
    assert by_name.name == f"rerankers:{rerank_model_path}:cross-encoder"  # round-trips through make_reranker
    ready = RerankersReranker(rerankers_lib.Reranker(rerank_model_path, model_type="cross-encoder", verbose=0))
    assert type(ready.ranker).__name__ == "TransformerRanker"
    query, hits = candidates[1]
    expected = theirs.rerank(query, hits, top_k=TOP_K)
    assert by_name.rerank(query, hits, top_k=TOP_K) == expected
    assert ready.rerank(query, hits, top_k=TOP_K) == expected
    capsys.readouterr()
    RerankersReranker(rerank_model_path)  # no type: the library guesses and print()s a warning about it...
    assert capsys.readouterr().out == ""  # ...which must not reach stdout (twostage query --json)


def test_bad_type_says_what_to_pass(rerank_model_path):
    with pytest.raises(InvalidParameterError, match=r"unknown rerankers model_type 'crossencoder'; pass one of: cross"):
        RerankersReranker(rerank_model_path, model_type="crossencoder")
    with pytest.raises(InvalidParameterError, match=r"unknown rerankers model type 'bogus'.*cross-encoder"):
        make_reranker(f"rerankers:{rerank_model_path}:bogus")


def test_missing_extra_gives_our_install_line(monkeypatch, rerank_model_path):
    monkeypatch.setitem(sys.modules, "rerankers", None)  # `import rerankers` now fails as if not installed
    with pytest.raises(MissingDependencyError, match=r'pip install "twostage-integrations\[rerankers\]"'):
        make_reranker(f"rerankers:{rerank_model_path}:cross-encoder")


def test_missing_backend_dependencies_give_the_librarys_install_line(monkeypatch, rerank_model_path, capsys):
    # rerankers registers a ranker class only when its dependencies import; without it Reranker() prints and
    # returns None
    monkeypatch.delitem(rerankers_lib.models.AVAILABLE_RANKERS, "TransformerRanker")
    with pytest.raises(MissingDependencyError, match=r'\(TransformerRanker\).*pip install "rerankers\[transformers\]"'):
        RerankersReranker(rerank_model_path, model_type="cross-encoder")
    assert capsys.readouterr().out == ""


def test_our_model_types_are_the_librarys():
    get_type, deps = rerankers_lib.reranker._get_model_type, rerankers_lib.reranker.DEPS_MAPPING
    classes = {t: get_type("any-model", t) for t in MODEL_TYPES}
    assert all(cls in deps for cls in classes.values()), classes  # each of ours names a real ranker class
    # ...and every class the library ships is reachable (LiT5Ranker is listed by the library but not shipped)
    assert set(deps) - set(classes.values()) <= {"LiT5Ranker"}
    assert LISTWISE_RANKERS & set(classes.values()) == {"RankGPTRanker", "RankLLMRanker"}


def test_api_types_take_the_key_from_the_environment(monkeypatch):
    monkeypatch.delenv("JINA_API_KEY", raising=False)
    with pytest.raises(APIKeyError, match="pass api_key=..., or set JINA_API_KEY"):
        make_reranker("rerankers:jina-reranker-v2-base-multilingual:jina")
    monkeypatch.setenv("JINA_API_KEY", "test-key-123")
    rr = make_reranker("rerankers:jina-reranker-v2-base-multilingual:jina")  # builds the client, no request yet
    assert type(rr.ranker).__name__ == "APIRanker" and rr.ranker.headers["Authorization"] == "Bearer test-key-123"
    assert "test-key-123" not in repr(rr)
