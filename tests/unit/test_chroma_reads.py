"""Reads never write: num_candidates deepens the HNSW search without touching the collection (no weights).

The collection is built from raw random vectors with a deliberately poor HNSW (ef_search=1, 4 neighbours), so
depth matters; 3,000 vectors is above Chroma's sync_threshold (1,000), so the HNSW index really answers.
"""

from __future__ import annotations

import json
import threading

import chromadb
import numpy as np
import pytest
from reliability_fakes import FakeEmbedder

from twostage_integrations import ChromaRecall
from twostage_integrations.errors import InvalidParameterError

N, DIM, K = 3000, 32, 10


@pytest.fixture(scope="module")
def ann(tmp_path_factory):
    rng = np.random.default_rng(7)
    docs = rng.normal(size=(N, DIM)).astype(np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    queries = rng.normal(size=(40, DIM)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    path = tmp_path_factory.mktemp("ann")
    client = chromadb.PersistentClient(path=str(path))
    hnsw = {"space": "cosine", "ef_search": 1, "ef_construction": 8, "max_neighbors": 4}
    collection = client.create_collection("ann-depth", embedding_function=None, configuration={"hnsw": hnsw})
    for start in range(0, N, 1000):
        ids = [str(i) for i in range(start, min(N, start + 1000))]
        collection.add(ids=ids, embeddings=docs[start : start + 1000], documents=[f"doc {i}" for i in ids])
    names = [f"q{i}" for i in range(len(queries))]
    embedder = FakeEmbedder(DIM, vectors=dict(zip(names, queries, strict=True)))
    exact = {q: {str(i) for i in np.argsort(-(docs @ v))[:K]} for q, v in zip(names, queries, strict=True)}
    return path, ChromaRecall(collection, client=client, embedding_model=embedder), names, exact


def stored_configuration(path) -> str:
    """The collection's configuration as persisted, read through a fresh client."""
    collection = chromadb.PersistentClient(path=str(path)).get_collection("ann-depth", embedding_function=None)
    return json.dumps(collection.configuration_json, sort_keys=True)


def recall_at_k(recall: ChromaRecall, names, exact, num_candidates) -> float:
    found = [{h.id for h in recall.search(q, K, num_candidates=num_candidates)} for q in names]
    return float(np.mean([len(f & exact[q]) / K for f, q in zip(found, names, strict=True)]))


def test_more_candidates_raise_recall_against_exact_cosine(ann):
    path, recall, names, exact = ann
    before = stored_configuration(path)
    shallow = recall_at_k(recall, names, exact, None)
    deep = recall_at_k(recall, names, exact, 500)
    assert deep > shallow, (shallow, deep)
    assert stored_configuration(path) == before  # and nothing was written to get there
    hits = recall.search(names[0], K, num_candidates=500)
    assert len(hits) == K and [h.recall_rank for h in hits] == list(range(1, K + 1))
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:], strict=False))


def test_concurrent_depths_match_sequential_and_write_nothing(ann):
    path, recall, names, _ = ann
    before = stored_configuration(path)
    depths = [None, 10, 25, 50, 100, 200, 400, 800]
    sequential = {nc: [[h.id for h in recall.search(q, K, num_candidates=nc)] for q in names[:10]] for nc in depths}
    concurrent: dict = {}
    seen_while_searching: set[str] = set()
    start, done = threading.Barrier(len(depths) + 1), threading.Event()

    def worker(nc):
        start.wait()
        concurrent[nc] = [[h.id for h in recall.search(q, K, num_candidates=nc)] for q in names[:10] * 3][:10]

    def watcher():  # what any other reader of the collection would see meanwhile
        start.wait()
        while not done.is_set():
            seen_while_searching.add(stored_configuration(path))

    threads = [threading.Thread(target=worker, args=(nc,)) for nc in depths]
    watch = threading.Thread(target=watcher)
    for t in [*threads, watch]:
        t.start()
    for t in threads:
        t.join()
    done.set()
    watch.join()
    assert concurrent == sequential
    assert seen_while_searching == {before}  # never changed, not even for a moment
    assert len({json.dumps(v) for v in sequential.values()}) > 1  # the depths really differ in what they find
    assert stored_configuration(path) == before


def test_num_candidates_must_be_positive(ann):
    _, recall, names, _ = ann
    with pytest.raises(InvalidParameterError, match="num_candidates"):
        recall.search(names[0], K, num_candidates=0)
