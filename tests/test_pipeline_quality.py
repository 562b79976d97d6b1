"""The pipeline loses nothing against an independent computation on real SciFact data.

Reference recall: exact cosine (numpy) with the same embedder over the same corpus subset.
Reference rerank: ``sentence_transformers.CrossEncoder.predict`` on the pipeline's own candidates.
We assert agreement within 0.01 nDCG@10, not that reranking wins (the shared cross-encoder is only
strong in-domain; see its card).
"""

from __future__ import annotations

import ir_measures
import numpy as np
import pytest
from ir_measures import nDCG

from twostage_integrations import ChromaRecall, TwoStagePipeline

LIMIT, TOP_K = 20, 10


def ndcg10(qrels: dict, run: dict) -> float:
    return ir_measures.calc_aggregate([nDCG @ 10], qrels, run)[nDCG @ 10]


def to_run(results: dict[str, list[tuple[str, float]]]) -> dict[str, dict[str, float]]:
    # ir-measures sorts by score; give rank-derived scores so ties cannot reorder anything.
    return {q: {doc: float(len(ranked) - i) for i, (doc, _) in enumerate(ranked)} for q, ranked in results.items()}


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, scifact_subset, embedder):
    doc_ids, texts, metas, queries, qrels = scifact_subset
    recall = ChromaRecall("scifact-subset", path=tmp_path_factory.mktemp("db"), embedding_model=embedder)
    recall.add_texts(texts, metadatas=metas, ids=doc_ids)
    return recall


@pytest.fixture(scope="module")
def pipeline_runs(indexed, cross_encoder, scifact_subset):
    _, _, _, queries, _ = scifact_subset
    pipe = TwoStagePipeline(indexed, cross_encoder, limit=LIMIT, top_k=TOP_K)
    recall_run, rerank_run, candidates = {}, {}, {}
    for qid, text in queries.items():
        result = pipe.run(text)
        candidates[qid] = result.candidates
        recall_run[qid] = [(h.id, h.recall_score) for h in result.candidates[:TOP_K]]
        rerank_run[qid] = [(h.id, h.score) for h in result.hits]
    return recall_run, rerank_run, candidates


def test_recall_order_matches_exact_cosine(pipeline_runs, scifact_subset, embedder):
    doc_ids, texts, _, queries, qrels = scifact_subset
    recall_run, _, candidates = pipeline_runs
    doc_vecs = embedder.embed(texts)
    qids = list(queries)
    q_vecs = embedder.embed([queries[q] for q in qids])
    sims = q_vecs @ doc_vecs.T
    reference = {}
    for row, qid in enumerate(qids):
        top = np.argsort(-sims[row], kind="stable")[:TOP_K]
        reference[qid] = [(doc_ids[j], float(sims[row, j])) for j in top]
        # recall_score is the cosine similarity itself, not just order-preserving
        got = {h.id: h.recall_score for h in candidates[qid]}
        for doc, sim in reference[qid][:3]:
            assert got[doc] == pytest.approx(sim, abs=1e-4)
    ours, ref = ndcg10(qrels, to_run(recall_run)), ndcg10(qrels, to_run(reference))
    print(f"recall nDCG@10: pipeline {ours:.4f} vs exact cosine {ref:.4f}")
    assert abs(ours - ref) <= 0.01


def test_reranked_order_matches_crossencoder_predict(pipeline_runs, scifact_subset, rerank_model_path):
    from sentence_transformers import CrossEncoder

    _, _, _, queries, qrels = scifact_subset
    _, rerank_run, candidates = pipeline_runs
    model = CrossEncoder(rerank_model_path)
    reference = {}
    for qid, text in queries.items():
        cands = candidates[qid]
        scores = model.predict([(text, h.text) for h in cands], show_progress_bar=False)
        order = np.argsort(-scores, kind="stable")[:TOP_K]
        reference[qid] = [(cands[j].id, float(scores[j])) for j in order]
    ours, ref = ndcg10(qrels, to_run(rerank_run)), ndcg10(qrels, to_run(reference))
    print(f"reranked nDCG@10: pipeline {ours:.4f} vs CrossEncoder.predict {ref:.4f}")
    assert abs(ours - ref) <= 0.01
    # and the scores themselves are the model's
    first = next(iter(queries))
    assert [d for d, _ in rerank_run[first]] == [d for d, _ in reference[first]]
    assert [s for _, s in rerank_run[first]] == pytest.approx([s for _, s in reference[first]], abs=1e-5)


def test_no_rerank_is_recall_order_cut_to_top_k(indexed, scifact_subset):
    _, _, _, queries, _ = scifact_subset
    query = next(iter(queries.values()))
    pipe = TwoStagePipeline(indexed, None, limit=LIMIT, top_k=3)
    result = pipe.run(query)
    assert [h.id for h in result.hits] == [h.id for h in result.candidates[:3]]
    assert all(h.rerank_score is None and h.rerank_rank is None for h in result.hits)
    assert [h.score for h in result.hits] == [h.recall_score for h in result.hits]
    assert result.timings.rerank_s == 0.0 and result.timings.recall_s > 0


def test_rerank_fields_and_timings(indexed, cross_encoder, scifact_subset):
    _, _, _, queries, _ = scifact_subset
    query = next(iter(queries.values()))
    pipe = TwoStagePipeline(indexed, cross_encoder, limit=LIMIT, top_k=5)
    result = pipe.run(query)
    assert len(result.candidates) == LIMIT and len(result.hits) == 5
    assert [h.rerank_rank for h in result.hits] == [1, 2, 3, 4, 5]
    assert [h.score for h in result.hits] == sorted((h.score for h in result.hits), reverse=True)
    assert all(h.score == h.rerank_score and isinstance(h.score, float) for h in result.hits)
    assert {h.id for h in result.hits} <= {h.id for h in result.candidates}
    assert pipe.last_timings is result.timings and result.timings.rerank_s > 0


async def test_asearch_equals_search(indexed, cross_encoder, scifact_subset):
    import asyncio

    _, _, _, queries, _ = scifact_subset
    texts = list(queries.values())[:4]
    pipe = TwoStagePipeline(indexed, cross_encoder, limit=10, top_k=3)
    sync = [[h.id for h in pipe.search(q)] for q in texts]
    concurrent = await asyncio.gather(*(pipe.asearch(q) for q in texts))
    assert [[h.id for h in hits] for hits in concurrent] == sync


def test_where_filter_passes_through(indexed, scifact_subset):
    doc_ids, _, metas, queries, _ = scifact_subset
    title = metas[5]["title"]
    pipe = TwoStagePipeline(indexed, None, limit=5, top_k=5)
    hits = pipe.search(next(iter(queries.values())), where={"title": title})
    assert [h.id for h in hits] == [doc_ids[5]]
    hits = pipe.search(title, where_document={"$contains": "zzzz-not-in-any-abstract"})
    assert hits == []


def test_num_candidates_sets_ef_search_for_the_call_only(indexed, scifact_subset):
    _, _, _, queries, _ = scifact_subset
    query = next(iter(queries.values()))
    before = indexed.collection.configuration["hnsw"]["ef_search"]
    plain = [h.id for h in indexed.search(query, 10)]
    deep = [h.id for h in indexed.search(query, 10, num_candidates=200)]
    assert deep == plain  # 500 docs: both depths find the exact neighbours
    fresh = indexed.client.get_collection(indexed.name)
    assert fresh.configuration["hnsw"]["ef_search"] == before
