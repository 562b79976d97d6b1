"""The BM25 save streams the collection page by page (no weights: Chroma embeds with the FakeEmbedder).

What must hold: the paged index scores exactly like one ``bm25s.tokenize`` call over the whole corpus; a save
writes the snapshot without holding the corpus (measured with tracemalloc against the in-memory rebuild); a
metadata-only change keeps the saved index; and ``twostage ingest`` frees its embedder before the save.
"""

from __future__ import annotations

import json
import shutil
import tracemalloc
from functools import cached_property

import numpy as np
import pytest
from typer.testing import CliRunner

import twostage_integrations.recall.bm25 as bm25_module
from twostage_integrations import BM25Recall, ChromaRecall
from twostage_integrations.cli import app
from twostage_integrations.embeddings import BaseEmbedder
from twostage_integrations.recall.bm25 import CORPUS_FILE, FINGERPRINT_FILE
from twostage_integrations.testing import FakeEmbedder

WORDS = [
    "aspirin",
    "stroke",
    "statin",
    "cholesterol",
    "sleep",
    "coffee",
    "heart",
    "risk",
    "adult",
    "dose",
    "trial",
    "blood",
    "pressure",
    "insulin",
]


def passages(n: int, words: int = 12) -> list[str]:
    """``n`` distinct passages of ``words`` words drawn from a small vocabulary (seeded)."""
    rng = np.random.default_rng(0)
    return [f"passage {i} " + " ".join(rng.choice(WORDS, size=words)) for i in range(n)]


@pytest.fixture
def small_pages(monkeypatch):
    monkeypatch.setattr(bm25_module, "_PAGE", 7)  # many pages for a few dozen passages


def chroma_with(tmp_path, texts: list[str], *, source: str = "notes.md") -> ChromaRecall:
    chroma = ChromaRecall("docs", path=tmp_path / "db", embedding_model=FakeEmbedder())
    metadatas = [{"n": i, "source": source} for i in range(len(texts))]
    chroma.add_texts(texts, metadatas=metadatas, ids=[f"d{i}" for i in range(len(texts))])
    return chroma


@pytest.mark.parametrize("stopwords", ["en", None])
def test_paged_index_scores_like_one_tokenize_call(tmp_path, small_pages, stopwords):
    import bm25s

    texts = [*passages(40), "the and of"]  # one passage of stopwords only
    chroma = chroma_with(tmp_path, texts)
    bm25 = BM25Recall(chroma, stopwords=stopwords)
    assert bm25.save() is not None
    whole = bm25s.tokenize(texts, stopwords=stopwords, return_ids=True, show_progress=False)
    reference = bm25s.BM25()
    reference.index(whole, show_progress=False)
    for query in ("aspirin stroke", "coffee heart risk", "passage 17 insulin"):
        hits = bm25.search(query, limit=len(texts))
        tokens = bm25s.tokenize([query], stopwords=stopwords, return_ids=False, show_progress=False)[0]
        expected = np.asarray(reference.get_scores(tokens))
        got = {hit.id: hit.recall_score for hit in hits}
        want = {f"d{i}": float(s) for i, s in enumerate(expected) if s > 0}
        assert got.keys() == want.keys()
        assert all(abs(got[k] - want[k]) < 1e-6 for k in got), query


def test_save_writes_the_snapshot_without_loading_it(tmp_path, small_pages):
    texts = passages(50)
    chroma = chroma_with(tmp_path, texts)
    bm25 = BM25Recall(chroma)
    folder = bm25.save()
    assert folder is not None and bm25._snapshot is None  # written to disk, never held as a snapshot
    corpus = json.loads((folder / CORPUS_FILE).read_text())
    stamp = json.loads((folder / FINGERPRINT_FILE).read_text())
    assert stamp["version"] == list(chroma.version())
    assert sorted(zip(stamp["ids"], corpus["texts"], strict=True)) == sorted((f"d{i}", t) for i, t in enumerate(texts))
    assert [meta["n"] for meta in corpus["metadatas"]] == [int(i[1:]) for i in stamp["ids"]]  # rows stay aligned
    cold = BM25Recall(ChromaRecall("docs", path=tmp_path / "db", embedding_model=FakeEmbedder()))
    hit = cold.search("passage 31", limit=1)[0]
    assert (hit.id, hit.text, hit.metadata["n"]) == ("d31", texts[31], 31)


def test_save_holds_far_less_than_the_in_memory_rebuild(tmp_path, monkeypatch):
    monkeypatch.setattr(bm25_module, "_PAGE", 50)
    texts = [" ".join(f"{w}{w}{w}" for w in text.split()) for text in passages(600, words=30)]  # 20-char words
    chroma = chroma_with(tmp_path, texts, source="library/" + "/".join(["section"] * 60) + "/notes.md")

    def peak(action) -> int:
        tracemalloc.start()
        try:
            action()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    streamed = peak(BM25Recall(chroma, index_dir=tmp_path / "a").save)
    in_memory = peak(BM25Recall(chroma, index_dir=tmp_path / "b").refresh)  # reads the whole corpus, as search does
    # bm25s's own index build is the same in both; what differs is the corpus held (texts, metadata, a JSON copy)
    assert streamed < 0.7 * in_memory, (streamed, in_memory)


def test_metadata_change_keeps_the_saved_index(tmp_path, small_pages):
    texts = passages(20)
    chroma = chroma_with(tmp_path, texts)
    folder = BM25Recall(chroma).save()
    assert folder is not None
    index_file = next(folder.glob("*.npy"))
    before = index_file.stat().st_mtime_ns
    chroma.add_texts([texts[3]], metadatas=[{"n": 303}], ids=["d3"])  # same text, new metadata
    again = BM25Recall(chroma).save()
    assert again == folder and index_file.stat().st_mtime_ns == before  # same passages: the index is kept
    assert json.loads((folder / FINGERPRINT_FILE).read_text())["version"] == list(chroma.version())
    cold = BM25Recall(ChromaRecall("docs", path=tmp_path / "db", embedding_model=FakeEmbedder()))
    (hit,) = [hit for hit in cold.search(texts[3], limit=len(texts)) if hit.id == "d3"]
    assert hit.metadata["n"] == 303


def test_fingerprint_ignores_order_but_not_content(tmp_path):
    bm25 = BM25Recall(ChromaRecall("docs", path=tmp_path / "db", embedding_model=FakeEmbedder()))
    ids, texts = ["a", "b", "c"], ["one", "two", "three"]
    assert bm25._fingerprint(ids, texts) == bm25._fingerprint(ids[::-1], texts[::-1])
    assert bm25._fingerprint(ids, texts) != bm25._fingerprint(ids, ["one", "two", "three!"])
    assert bm25._fingerprint(ids, texts) != bm25._fingerprint(["a", "c", "b"], texts)


class LoadedOnceEmbedder(BaseEmbedder):
    """A FakeEmbedder behind a lazily loaded ``model``, like the real embedders."""

    def __init__(self) -> None:
        super().__init__("fake-bag-of-words")
        self.loads = 0

    @cached_property
    def model(self) -> FakeEmbedder:
        self.loads += 1
        return FakeEmbedder()

    @property
    def dimension(self) -> int:
        return self.model.dimension

    def embed(self, texts, *, progress=False, desc="embedding"):
        return self.model.embed(texts)


def test_ingest_frees_the_embedder_before_the_bm25_save(tmp_path, monkeypatch):
    import twostage_integrations.recall.chroma as chroma_module
    import twostage_integrations.recall.factory as factory

    embedder = LoadedOnceEmbedder()
    monkeypatch.setattr(chroma_module, "as_embedder", lambda model=None: embedder)
    loaded_at_save = []
    real_persist = factory.persist_bm25

    def persist(recall, **options):
        loaded_at_save.append("model" in embedder.__dict__)
        return real_persist(recall, **options)

    monkeypatch.setattr(factory, "persist_bm25", persist)
    notes = tmp_path / "notes.jsonl"
    notes.write_text("".join(json.dumps({"text": t}) + "\n" for t in passages(5)))
    result = CliRunner().invoke(app, ["ingest", str(notes), "-c", "notes", "--db", str(tmp_path / "db")])
    assert result.exit_code == 0, result.output
    assert embedder.loads == 1 and loaded_at_save == [False]
    assert list((tmp_path / "db" / "bm25" / "notes").glob(f"*/{CORPUS_FILE}"))  # the save still happened
    embedder.embed(["again"])
    assert embedder.loads == 2  # unloading is not breaking: the next use loads the model again


def test_a_save_the_disk_refuses_warns_and_leaves_searches_working(tmp_path, small_pages, caplog):
    texts = passages(12)
    chroma = chroma_with(tmp_path, texts)
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the index folder would go")
    bm25 = BM25Recall(chroma, index_dir=blocked / "bm25")
    with caplog.at_level("WARNING", logger="twostage_integrations.recall.bm25"):
        assert bm25.save() is None
    assert "could not save the BM25 index" in caplog.text
    assert bm25.search(texts[5], limit=1)[0].id == "d5"  # built in memory instead


def test_a_failed_read_leaves_no_temporary_folder(tmp_path, small_pages, monkeypatch):
    chroma = chroma_with(tmp_path, passages(20))
    bm25 = BM25Recall(chroma, index_dir=tmp_path / "idx")

    def pages_then_fail():
        yield from list(BM25Recall._pages(bm25))[:1]
        raise RuntimeError("the database went away")

    monkeypatch.setattr(bm25, "_pages", pages_then_fail)
    with pytest.raises(RuntimeError, match="went away"):
        bm25.save()
    assert list((tmp_path / "idx").iterdir()) == []


def test_a_failed_write_of_the_in_memory_index_leaves_no_temporary_folder(tmp_path, monkeypatch, caplog):
    texts = passages(10)
    bm25 = BM25Recall(chroma_with(tmp_path, texts), index_dir=tmp_path / "idx")

    def disk_full(folder, snapshot):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(bm25, "_write_files", disk_full)  # the search's rebuild saves, and that write fails
    with caplog.at_level("WARNING", logger="twostage_integrations.recall.bm25"):
        assert bm25.search(texts[3], limit=1)[0].id == "d3"
    assert "could not save the BM25 index" in caplog.text
    assert list((tmp_path / "idx").iterdir()) == []


def test_a_kept_index_removed_meanwhile_is_saved_again(tmp_path, small_pages, monkeypatch):
    texts = passages(15)
    chroma = chroma_with(tmp_path, texts)
    folder = BM25Recall(chroma).save()
    assert folder is not None
    chroma.add_texts([texts[4]], metadatas=[{"n": 404}], ids=["d4"])  # metadata only: the index would be kept
    real_restamp = bm25_module._restamp

    def removed_first(corpus, target, stamp):  # another process cleans the folder up just before we move in
        shutil.rmtree(target)
        return real_restamp(corpus, target, stamp)

    monkeypatch.setattr(bm25_module, "_restamp", removed_first)
    assert BM25Recall(chroma).save() == folder
    assert list(folder.glob("*.npy"))  # a whole index again, not a corpus file and a stamp alone
    cold = BM25Recall(ChromaRecall("docs", path=tmp_path / "db", embedding_model=FakeEmbedder()))
    (hit,) = [hit for hit in cold.search(texts[4], limit=len(texts)) if hit.id == "d4"]
    assert hit.metadata["n"] == 404
