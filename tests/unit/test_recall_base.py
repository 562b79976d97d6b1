"""BaseRecall: default asearch off the event loop, one hit builder, delete, the public accessors, the factory.

No weights: the dense arm is a ChromaRecall with the FakeEmbedder (``fake_recall``); these tests are about
plumbing, not retrieval quality.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from twostage_integrations import BM25Recall, ChromaRecall, HybridRecall, Recall
from twostage_integrations.errors import StorageError, TwoStageError
from twostage_integrations.hit import Hit
from twostage_integrations.recall import BaseRecall, DeleteNotSupportedError
from twostage_integrations.recall.base import AddResult
from twostage_integrations.recall.factory import RECALL_KINDS, hybrid_from_chroma, recall_by_kind

DOCS = {"a": "apples grow on trees", "b": "bananas are yellow", "c": "cherries are red and small"}
QUERY = "apples bananas cherries"


@pytest.fixture
def chroma(fake_recall: ChromaRecall) -> ChromaRecall:
    fake_recall.add_texts(list(DOCS.values()), ids=list(DOCS), metadatas=[{"n": i} for i in range(len(DOCS))])
    return fake_recall


class ListRecall(BaseRecall):
    """A minimal BaseRecall over a list: substring match, rank = list order. ``gate`` makes search wait."""

    score_kind = "test"

    def __init__(self, texts: Sequence[str], gate: threading.Event | None = None) -> None:
        self.texts = list(texts)
        self.gate = gate
        self.started = threading.Event()
        self.events: list[str] = []
        self.search_threads: list[int] = []

    def search(
        self,
        query: str,
        limit: int = 20,
        *,
        where: Mapping[str, Any] | None = None,
        where_document: Mapping[str, Any] | None = None,
        prefix: str = "",
    ) -> list[Hit]:
        self.search_threads.append(threading.get_ident())
        self.started.set()
        if self.gate is not None:
            # Released by a coroutine on the event loop; the timeout only keeps a broken asearch from hanging.
            self.events.append("search released" if self.gate.wait(timeout=30) else "search timed out")
        found = [(i, t) for i, t in enumerate(self.texts) if query in t and t.startswith(prefix)]
        return [self._hit(str(i), t, {"i": i}, 1.0 / (rank + 1), rank + 1) for rank, (i, t) in enumerate(found)][:limit]

    def add_texts(
        self,
        texts: Sequence[str],
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
        ids: Sequence[str] | None = None,
    ) -> AddResult:
        self.texts.extend(texts)
        return AddResult(added=len(texts))

    def count(self) -> int:
        return len(self.texts)


# -- BaseRecall ------------------------------------------------------------------------------------------


def test_base_recall_is_a_recall_and_needs_the_abstract_methods():
    assert isinstance(ListRecall([]), Recall)

    class Incomplete(BaseRecall):
        def count(self) -> int:
            return 0

    with pytest.raises(TypeError, match="abstract"):
        Incomplete()  # type: ignore[abstract]


async def test_default_asearch_returns_what_search_returns():
    recall = ListRecall(["red apple", "green apple", "apple pie", "pear"])
    assert await recall.asearch("apple", 2) == recall.search("apple", 2)
    assert [h.id for h in await recall.asearch("apple")] == ["0", "1", "2"]
    # backend options of the subclass's search pass through; an unknown one is a TypeError
    assert await recall.asearch("apple", prefix="green") == recall.search("apple", prefix="green")
    assert [h.id for h in await recall.asearch("apple", prefix="green")] == ["1"]
    with pytest.raises(TypeError):
        await recall.asearch("apple", no_such_option=1)


async def test_default_asearch_does_not_block_the_event_loop():
    """search waits until a coroutine on the loop releases it: only possible if search runs elsewhere."""
    gate = threading.Event()
    recall = ListRecall(["red apple", "pear"], gate=gate)

    async def other_coroutine() -> None:
        while not recall.started.is_set():
            await asyncio.sleep(0)
        recall.events.append("loop ran while search waited")
        gate.set()

    hits, _ = await asyncio.gather(recall.asearch("apple"), other_coroutine())
    assert recall.events == ["loop ran while search waited", "search released"]
    assert [h.id for h in hits] == ["0"]
    assert recall.search_threads[0] != threading.get_ident()


def test_default_delete_refuses_with_a_typed_error():
    with pytest.raises(DeleteNotSupportedError, match="ListRecall cannot delete") as info:
        ListRecall(["x"]).delete(["0"])
    assert isinstance(info.value, TwoStageError) and isinstance(info.value, NotImplementedError)


def test_hit_helper_fills_the_stage1_fields():
    meta = {"source": "a.md"}
    hit = BaseRecall._hit("d1", None, meta, 3, 2)
    assert (hit.id, hit.text, hit.metadata, hit.recall_rank) == ("d1", "", meta, 2)
    assert hit.score == hit.recall_score == 3.0 and type(hit.score) is float
    assert hit.rerank_score is None and hit.rerank_rank is None
    hit.metadata["source"] = "changed"
    assert meta == {"source": "a.md"}  # a copy: callers may change a hit's metadata freely
    assert BaseRecall._hit("d2", "text", None, 0.5, 1).metadata == {}


# -- the shipped recalls ---------------------------------------------------------------------------------


def test_shipped_recalls_derive_from_base_recall(chroma):
    bm25 = BM25Recall(chroma)
    for recall in (chroma, bm25, HybridRecall(chroma, bm25)):
        assert isinstance(recall, BaseRecall) and isinstance(recall, Recall)


@pytest.mark.parametrize("kind", ["dense", "bm25"])
def test_dense_and_sparse_hits_are_built_by_the_helper(chroma, monkeypatch, kind):
    recall = chroma if kind == "dense" else BM25Recall(chroma)
    built: list[Hit] = []
    real = BaseRecall._hit

    def spy(*args: Any) -> Hit:
        built.append(real(*args))
        return built[-1]

    monkeypatch.setattr(BaseRecall, "_hit", staticmethod(spy))
    hits = recall.search(QUERY, 3)
    assert hits and hits == built
    assert [h.recall_rank for h in hits] == list(range(1, len(hits) + 1))
    for h in hits:
        assert h.score == h.recall_score and type(h.recall_score) is float
        assert h.text == DOCS[h.id] and h.metadata == {"n": list(DOCS).index(h.id)}
    hits[0].metadata["n"] = "changed"  # hits own their metadata: the next search is unaffected
    assert recall.search(QUERY, 3)[0].metadata != {"n": "changed"}


@pytest.mark.parametrize("kind", ["dense", "bm25", "hybrid"])
async def test_shipped_asearch_equals_search(chroma, kind):
    recall = recall_by_kind(kind, chroma)
    assert await recall.asearch(QUERY, 2) == recall.search(QUERY, 2)
    where = {"n": {"$gte": 1}}
    assert await recall.asearch(QUERY, 3, where=where) == recall.search(QUERY, 3, where=where)


async def test_chroma_asearch_passes_num_candidates_and_refuses_unknown_options(chroma):
    assert await chroma.asearch(QUERY, 2, num_candidates=50) == chroma.search(QUERY, 2, num_candidates=50)
    with pytest.raises(TypeError):
        await chroma.asearch(QUERY, 2, ef_search=50)


# -- delete ----------------------------------------------------------------------------------------------


def test_dense_and_sparse_delete(chroma):
    bm25 = BM25Recall(chroma, refresh_interval=3600)
    assert "a" in [h.id for h in bm25.search("apples", 3)]
    assert bm25.delete(["a"]) == 1
    assert bm25.search("apples", 3) == []
    assert "a" not in [h.id for h in chroma.search("apples", 3)]
    assert chroma.delete(["b", "b", "missing"]) == 1
    assert bm25.search("bananas", 3) == []  # deleted through the shared ChromaRecall: seen at once
    assert chroma.count() == 1


def test_hybrid_deletes_from_arms_over_different_collections(chroma, tmp_path, fake_embedder):
    other = ChromaRecall("other", path=tmp_path / "other", embedding_model=fake_embedder, progress=False)
    other.add_texts(list(DOCS.values()), ids=list(DOCS))
    sparse = BM25Recall(other, refresh_interval=3600)
    hybrid = HybridRecall(chroma, sparse)
    assert "c" in [h.id for h in sparse.search("cherries", 3)]
    assert hybrid.delete(["c"]) == 1
    assert chroma.count() == other.count() == len(DOCS) - 1
    assert sparse.search("cherries", 3) == []
    assert "c" not in [h.id for h in hybrid.search("cherries red", 3)]


def test_hybrid_delete_refuses_before_deleting_anything(chroma):
    hybrid = HybridRecall(chroma, ListRecall(list(DOCS.values())))
    with pytest.raises(DeleteNotSupportedError, match="sparse arm"):
        hybrid.delete(["a"])
    assert chroma.count() == len(DOCS)  # the dense arm kept its passage
    with pytest.raises(DeleteNotSupportedError, match="dense arm"):
        HybridRecall(ListRecall([]), BM25Recall(chroma)).delete(["a"])
    assert chroma.count() == len(DOCS)


# -- public accessors ------------------------------------------------------------------------------------


def test_chroma_writes_counts_writes_that_changed_something(fake_recall):
    assert fake_recall.writes == 0
    fake_recall.add_texts(["one passage"], ids=["x"])
    after_add = fake_recall.writes
    assert after_add > 0
    fake_recall.add_texts(["one passage"], ids=["x"])  # stored as given: nothing written
    assert fake_recall.writes == after_add
    assert fake_recall.delete(["missing"]) == 0
    assert fake_recall.writes == after_add
    fake_recall.delete(["x"])
    assert fake_recall.writes > after_add


def test_chroma_errors_names_the_database(fake_recall):
    with pytest.raises(StorageError, match=str(fake_recall.location)), fake_recall.errors():
        raise PermissionError(13, "Permission denied")


def test_mark_stale_makes_the_next_search_check_the_collection(chroma):
    bm25 = BM25Recall(chroma, refresh_interval=3600)
    assert bm25.search("kiwis", 3) == []
    # Written with the raw Chroma API: neither chroma.writes nor the version stamp moves, only the count.
    text = "kiwis are green"
    chroma.collection.add(ids=["k"], documents=[text], embeddings=chroma.embedder.embed([text]))
    assert bm25.search("kiwis", 3) == []  # within the refresh interval: the snapshot as it was
    bm25.mark_stale()
    assert [h.id for h in bm25.search("kiwis", 3)] == ["k"]


# -- factory ---------------------------------------------------------------------------------------------


def test_factory_builds_each_kind_over_one_collection(chroma):
    assert RECALL_KINDS == ("dense", "bm25", "hybrid")
    assert recall_by_kind("dense", chroma) is chroma
    bm25 = recall_by_kind("bm25", chroma, stemmer="english")
    assert isinstance(bm25, BM25Recall) and bm25.chroma is chroma and bm25.stemmer_language == "english"
    hybrid = recall_by_kind("hybrid", chroma, rrf_k=10, candidates_per_arm=7)
    assert isinstance(hybrid, HybridRecall) and hybrid.dense is chroma
    assert isinstance(hybrid.sparse, BM25Recall) and hybrid.sparse.chroma is chroma
    assert (hybrid.k, hybrid.candidates_per_arm) == (10, 7)


def test_from_chroma_goes_through_the_factory_and_keeps_the_class(chroma):
    class MyHybrid(HybridRecall):
        pass

    mine = MyHybrid.from_chroma(chroma, k=5)
    assert type(mine) is MyHybrid and mine.k == 5 and mine.sparse.chroma is chroma  # type: ignore[attr-defined]
    built = hybrid_from_chroma(chroma, stemmer="english", weights=(1.0, 2.0))
    assert type(built) is HybridRecall and built.weights == (1.0, 2.0)
    assert built.sparse.stemmer_language == "english"  # type: ignore[attr-defined]


def test_recall_factories_are_exported_from_the_recall_package():
    from twostage_integrations import recall
    from twostage_integrations.recall import factory

    assert recall.recall_by_kind is factory.recall_by_kind and recall.RECALL_KINDS is factory.RECALL_KINDS
