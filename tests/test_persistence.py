"""Embedded Chroma keeps what was ingested; re-ingesting or resuming stores every passage once."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from twostage_integrations import ChromaRecall


@pytest.fixture(scope="module")
def passages(scifact_subset):
    doc_ids, texts, metas, queries, _ = scifact_subset
    return doc_ids[:120], texts[:120], metas[:120], list(queries.values())[:3]


def test_reopen_in_new_process_gives_same_results(tmp_path, embedder, passages):
    ids, texts, metas, queries = passages
    db = tmp_path / "db"
    recall = ChromaRecall("persist", path=db, embedding_model=embedder, progress=False)
    first = recall.add_texts(texts, metadatas=metas, ids=ids)
    assert (first.added, first.unchanged) == (120, 0)
    here = [[h.id for h in recall.search(q, 5)] for q in queries]

    script = (
        "import json, sys\n"
        "from twostage_integrations import ChromaRecall\n"
        "r = ChromaRecall('persist', path=sys.argv[1])\n"
        "print(json.dumps([r.count()] + [[h.id for h in r.search(q, 5)] for q in json.loads(sys.argv[2])]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(db), json.dumps(queries)], capture_output=True, text=True, check=True
    )
    count, *there = json.loads(out.stdout.strip().splitlines()[-1])
    assert count == 120
    assert there == here

    again = ChromaRecall("persist", path=db, embedding_model=embedder, progress=False).add_texts(
        texts, metadatas=metas, ids=ids
    )
    assert (again.added, again.updated, again.unchanged) == (0, 0, 120)


def test_same_text_twice_without_ids_is_stored_once(tmp_path, embedder):
    recall = ChromaRecall("dedupe", path=tmp_path / "db", embedding_model=embedder, progress=False)
    text = "Metformin is a first-line treatment for type 2 diabetes."
    assert recall.add_texts([text, text]).added == 1
    assert recall.add_texts([text]).unchanged == 1
    assert recall.count() == 1


def test_changed_text_under_same_id_is_updated(tmp_path, embedder):
    recall = ChromaRecall("update", path=tmp_path / "db", embedding_model=embedder, progress=False)
    recall.add_texts(["old text about statins"], ids=["doc-1"])
    result = recall.add_texts(["new text about statins and muscle pain"], ids=["doc-1"])
    assert (result.added, result.updated) == (0, 1)
    assert recall.collection.get(ids=["doc-1"])["documents"] == ["new text about statins and muscle pain"]


def test_interrupted_ingest_rerun_stores_each_passage_exactly_once(tmp_path, embedder, passages, monkeypatch):
    ids, texts, metas, _ = passages
    texts = [t[:200] for t in texts] * 3  # 360 short passages = two write batches of 256
    ids = [f"{i}-{k}" for k in range(3) for i in ids]
    metas = metas * 3
    recall = ChromaRecall("resume", path=tmp_path / "db", embedding_model=embedder, progress=False)
    collection = recall._get_collection(create=True)
    real_upsert = collection.upsert
    calls = {"n": 0}

    def upsert_then_die(**kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # the user hits Ctrl-C during the second batch
        return real_upsert(**kwargs)

    monkeypatch.setattr(collection, "upsert", upsert_then_die)
    with pytest.raises(KeyboardInterrupt):
        recall.add_texts(texts, metadatas=metas, ids=ids)
    monkeypatch.setattr(collection, "upsert", real_upsert)
    assert 0 < recall.count() < len(ids)

    result = recall.add_texts(texts, metadatas=metas, ids=ids)
    assert result.unchanged == 256 and result.added == len(ids) - 256
    stored = collection.get(include=[])["ids"]
    assert sorted(stored) == sorted(ids)  # every passage, exactly once
