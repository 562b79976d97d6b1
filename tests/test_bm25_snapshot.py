"""BM25 freshness without a round trip per query, consistent snapshots, deletes through every arm (no weights).

The dense arm uses ``FakeEmbedder`` (hashed bag of words): these tests are about what the indexes see, not
about retrieval quality.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from twostage_integrations import BM25Recall, ChromaRecall, HybridRecall
from twostage_integrations.testing import FakeEmbedder

REPO = Path(__file__).resolve().parents[1]
DOCS = {"a": "apples grow on trees", "b": "bananas are yellow", "c": "cherries are red and small"}


def make_chroma(path, name="snap-test") -> ChromaRecall:
    return ChromaRecall(name, path=path, embedding_model=FakeEmbedder(), progress=False)


@pytest.fixture
def chroma(tmp_path):
    recall = make_chroma(tmp_path / "db")
    recall.add_texts(list(DOCS.values()), ids=list(DOCS), metadatas=[{"v": 0}] * len(DOCS))
    return recall


def other_process_writes(db: Path, code: str) -> None:
    """Run ``code`` with ``chroma`` (a ChromaRecall on the same database) in a separate Python process."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.path[:0] = [{str(REPO)!r}]
        from twostage_integrations.testing import FakeEmbedder
        from twostage_integrations import ChromaRecall
        chroma = ChromaRecall("snap-test", path={str(db)!r}, embedding_model=FakeEmbedder(), progress=False)
        """
    )
    subprocess.run([sys.executable, "-c", script + textwrap.dedent(code)], check=True, timeout=120)


def test_edit_in_place_by_another_process_is_seen(chroma, tmp_path):
    bm25 = BM25Recall(chroma, refresh_interval=0)  # check the stamp before every search
    assert [h.id for h in bm25.search("apples", 3)] == ["a"]
    # Same id, new text, same count: a count() check cannot see this; the version stamp does.
    other_process_writes(tmp_path / "db", 'chroma.add_texts(["zebras run fast"], ids=["a"])')
    assert chroma.count() == len(DOCS)
    assert [h.id for h in bm25.search("zebras", 3)] == ["a"]
    assert bm25.search("apples", 3) == []


def test_staleness_is_checked_every_interval_not_every_query(chroma, tmp_path, monkeypatch):
    bm25 = BM25Recall(chroma, refresh_interval=3600)
    bm25.search("apples", 3)  # first search: build the snapshot
    checks = []
    real_version = chroma.version
    monkeypatch.setattr(chroma, "version", lambda: checks.append(1) or real_version())
    for _ in range(20):
        bm25.search("bananas", 3)
    assert checks == []  # no Chroma round trip per query
    other_process_writes(tmp_path / "db", 'chroma.add_texts(["zebras run fast"], ids=["a"])')
    assert [h.id for h in bm25.search("apples", 3)] == ["a"]  # within the interval: the snapshot as it was
    bm25.refresh()  # on demand
    assert [h.id for h in bm25.search("zebras", 3)] == ["a"]
    bm25.refresh_interval = 0
    bm25.search("zebras", 3)
    assert len(checks) == 2  # refresh() read the version once, the next search checked it once


def test_own_writes_are_seen_at_once(chroma):
    bm25 = BM25Recall(chroma, refresh_interval=3600)
    assert bm25.search("kiwis", 3) == []
    bm25.add_texts(["kiwis are green"], ids=["k"])
    assert [h.id for h in bm25.search("kiwis", 3)] == ["k"]
    chroma.add_texts(["kiwis and limes"], ids=["l"])  # written through the shared ChromaRecall, not bm25
    assert [h.id for h in bm25.search("limes", 3)] == ["l"]


def test_delete_reaches_both_arms(chroma):
    hybrid = HybridRecall.from_chroma(chroma)
    assert "b" in [h.id for h in hybrid.search("bananas yellow", 3)]
    assert "b" in [h.id for h in hybrid.sparse.search("bananas", 3)]
    assert hybrid.delete(["b", "not-stored"]) == 1
    assert "b" not in [h.id for h in hybrid.search("bananas yellow", 3)]
    assert hybrid.sparse.search("bananas", 3) == []
    assert "b" not in [h.id for h in chroma.search("bananas yellow", 3)]
    assert chroma.count() == len(DOCS) - 1
    bm25 = BM25Recall(chroma)
    assert bm25.delete(["c"]) == 1 and bm25.search("cherries", 3) == []


def test_readers_never_see_a_half_built_index(chroma):
    """Each hit's id, text and metadata come from one snapshot, while a writer rewrites every passage."""
    bm25 = BM25Recall(chroma, refresh_interval=0)
    ids = [f"d{i}" for i in range(30)]

    def version(k: int):
        return [f"passage {i} common token{k}" for i in range(30)], [{"k": k}] * 30

    chroma.add_texts(*version(0), ids=ids)
    problems: list[str] = []
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            for h in bm25.search("common", 30):
                if f"token{h.metadata['k']}" not in h.text:
                    problems.append(f"{h.id}: text {h.text!r} with metadata {h.metadata}")

    readers = [threading.Thread(target=reader) for _ in range(4)]
    for t in readers:
        t.start()
    try:
        for k in range(1, 8):
            texts, metas = version(k)
            chroma.add_texts(texts, metadatas=metas, ids=ids)
            bm25.refresh()
    finally:
        stop.set()
        for t in readers:
            t.join()
    assert problems == []
    assert {h.metadata["k"] for h in bm25.search("common", 30)} == {7}
