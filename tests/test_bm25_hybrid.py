"""BM25 and hybrid (RRF) recall: each arm finds what the other misses, fusion order by hand, persistence,
filters, pipeline plug-in."""

from __future__ import annotations

import logging

import pytest
from time_limits import SUBPROCESS_TIMEOUT

from twostage_integrations import BM25Recall, ChromaRecall, Hit, HybridRecall, TwoStagePipeline
from twostage_integrations.errors import InvalidParameterError
from twostage_integrations.recall.hybrid import rrf_fuse

# A constructed corpus: "feline" answers the query in other words (no shared term, so BM25 cannot see it);
# "ticket" shares the literal word "cat" but is about something else (so dense ranks it low).
DOCS = {
    "feline": "A kitten dozed on the rug by the fireplace all afternoon.",
    "ticket": "Ticket ZX-4471: the invoice export fails with status 500 when the cat field is empty.",
    "stocks": "Stock markets fell sharply after the central bank raised interest rates.",
    "recipe": "Whisk the eggs with sugar, then fold in the flour and bake for 30 minutes.",
    "dogs": "Puppies need training, regular walks and plenty of chew toys.",
    "pets": "Caring for household animals: feeding schedules, vet visits and grooming.",
}
TOPIC = {"feline": "home", "ticket": "work", "stocks": "work", "recipe": "home", "dogs": "home", "pets": "home"}
QUERY = "where is the cat sleeping?"


@pytest.fixture(scope="module")
def chroma(embedder, tmp_path_factory):
    recall = ChromaRecall("hybrid-test", path=tmp_path_factory.mktemp("db"), embedding_model=embedder, progress=False)
    recall.add_texts(list(DOCS.values()), ids=list(DOCS), metadatas=[{"topic": TOPIC[d]} for d in DOCS])
    return recall


def test_each_arm_finds_what_the_other_misses(chroma):
    bm25 = BM25Recall(chroma)
    dense_ids = [h.id for h in chroma.search(QUERY, 2)]
    bm25_ids = [h.id for h in bm25.search(QUERY, 2)]
    assert "feline" in dense_ids and "feline" not in bm25_ids  # meaning without shared words: dense only
    assert "ticket" in bm25_ids and "ticket" not in dense_ids  # shared word, different meaning: BM25 only
    hybrid_ids = [h.id for h in HybridRecall(chroma, bm25).search(QUERY, 2)]
    assert set(hybrid_ids) == {"feline", "ticket"}


def test_bm25_hits_are_scored_and_ranked(chroma):
    hits = BM25Recall(chroma).search("invoice export status", 5)
    assert [h.id for h in hits] == ["ticket"]  # only passages sharing a term come back
    assert hits[0].recall_rank == 1 and hits[0].score == hits[0].recall_score > 0
    assert hits[0].text == DOCS["ticket"] and hits[0].metadata == {"topic": "work"}


def test_rrf_order_by_hand():
    a, b, c, d = (Hit(id=x, text=x.upper()) for x in "abcd")
    fused = rrf_fuse([[a, b, c], [c, a, d]], k=60)
    expected = {"a": 1 / 61 + 1 / 62, "b": 1 / 62, "c": 1 / 63 + 1 / 61, "d": 1 / 63}
    assert [h.id for h in fused] == ["a", "c", "b", "d"]
    assert [h.recall_rank for h in fused] == [1, 2, 3, 4]
    assert [h.score for h in fused] == pytest.approx([expected[h.id] for h in fused])
    # Weights scale each list: with the second list weighted 3x, c (1st there) overtakes a.
    weighted = rrf_fuse([[a, b, c], [c, a, d]], k=60, weights=[1, 3])
    assert [h.id for h in weighted][:2] == ["c", "a"]
    assert weighted[0].score == pytest.approx(1 / 63 + 3 / 61)


def test_hybrid_order_is_rrf_of_the_arms(chroma):
    bm25 = BM25Recall(chroma)
    hybrid = HybridRecall(chroma, bm25, k=10, candidates_per_arm=4)
    arms = [chroma.search(QUERY, 4), bm25.search(QUERY, 4)]
    by_hand: dict[str, float] = {}
    for arm in arms:
        for rank, hit in enumerate(arm, start=1):
            by_hand[hit.id] = by_hand.get(hit.id, 0.0) + 1 / (10 + rank)
    hits = hybrid.search(QUERY, 3)
    assert len(hits) == 3
    assert [h.score for h in hits] == pytest.approx(sorted(by_hand.values(), reverse=True)[:3])
    assert all(h.recall_score == pytest.approx(by_hand[h.id]) for h in hits)


def test_filters_apply_to_both_arms(chroma):
    hybrid = HybridRecall.from_chroma(chroma)
    home = hybrid.search(QUERY, 6, where={"topic": "home"})
    assert home and all(TOPIC[h.id] == "home" for h in home)
    assert "ticket" not in [h.id for h in home]  # BM25's best match is filtered out too
    assert [h.id for h in hybrid.sparse.search("invoice", 3, where={"topic": "home"})] == []
    assert [h.id for h in hybrid.sparse.search("invoice", 3, where_document={"$contains": "ZX-4471"})] == ["ticket"]


async def test_async_search_matches_sync(chroma):
    hybrid = HybridRecall.from_chroma(chroma)
    assert [h.id for h in await hybrid.asearch(QUERY, 4)] == [h.id for h in hybrid.search(QUERY, 4)]
    assert [h.id for h in await hybrid.sparse.asearch(QUERY, 4)] == [h.id for h in hybrid.sparse.search(QUERY, 4)]


def test_bm25_index_is_saved_reused_and_rebuilt_on_change(embedder, tmp_path, caplog):
    db = tmp_path / "db"
    chroma = ChromaRecall("persist-test", path=db, embedding_model=embedder, progress=False)
    chroma.add_texts(list(DOCS.values()), ids=list(DOCS))
    with caplog.at_level(logging.INFO, logger="twostage_integrations.recall.bm25"):
        assert BM25Recall(chroma).search("invoice", 1)[0].id == "ticket"
        assert len(list((db / "bm25" / "persist-test").glob("*/vocab.index.json"))) == 1  # beside the Chroma data
        assert sum("building BM25 index" in r.message for r in caplog.records) == 1
        caplog.clear()
        fresh = BM25Recall(ChromaRecall("persist-test", path=db, embedding_model=embedder, progress=False))
        assert fresh.search("invoice", 1)[0].id == "ticket"
        assert not any("building BM25 index" in r.message for r in caplog.records)  # loaded, not rebuilt
        fresh.add_texts(["A zebra crossing invoice reminder."], ids=["zebra"])
        assert [h.id for h in fresh.search("zebra", 3)] == ["zebra"]  # corpus changed: rebuilt
        assert any("building BM25 index" in r.message for r in caplog.records)


def test_pipeline_accepts_bm25_and_hybrid(chroma, cross_encoder):
    for recall in (BM25Recall(chroma), HybridRecall.from_chroma(chroma)):
        result = TwoStagePipeline(recall, cross_encoder, limit=4, top_k=2).run("a cat on the rug")
        assert len(result.hits) == 2 and all(h.rerank_score is not None for h in result.hits)
        assert {h.id for h in result.hits} <= {h.id for h in result.candidates}


def test_bad_hybrid_arguments_are_typed_errors(chroma):
    bm25 = BM25Recall(chroma)
    with pytest.raises(InvalidParameterError, match="k must be"):
        HybridRecall(chroma, bm25, k=-1)
    with pytest.raises(InvalidParameterError, match="weights"):
        HybridRecall(chroma, bm25, weights=(1.0, -2.0))
    with pytest.raises(InvalidParameterError, match="candidates_per_arm"):
        HybridRecall(chroma, bm25, candidates_per_arm=0)


def test_cli_query_recall_option(chroma, tmp_path):
    import json
    import subprocess
    import sys

    db = chroma.client.get_settings().persist_directory
    cmd = [sys.executable, "-c", "from twostage_integrations.cli import app; app()", "query", QUERY]
    cmd += ["--collection", "hybrid-test", "--db", db, "--no-rerank", "--json", "--limit", "2", "--top-k", "2"]
    runs = {
        kind: subprocess.run(cmd + ["--recall", kind], capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
        for kind in ("hybrid", "sparse")
    }
    assert runs["hybrid"].returncode == 0, runs["hybrid"].stderr
    assert {h["id"] for h in json.loads(runs["hybrid"].stdout)["hits"]} == {"feline", "ticket"}
    assert runs["sparse"].returncode == 2 and "recall must be one of dense, bm25, hybrid" in runs["sparse"].stderr
