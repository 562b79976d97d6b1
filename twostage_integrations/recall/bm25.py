"""Sparse (keyword) recall with BM25 (``bm25s``) over the passages of a Chroma collection.

Chroma stays the one place passages live; the BM25 index is derived from it, saved beside the Chroma data
(``<db>/bm25/<collection>/``) and rebuilt only when the collection's ids or texts change.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..hit import Hit
from ..validation import check_search_args
from .base import AddResult
from .chroma import ChromaRecall, default_db_path

log = logging.getLogger(__name__)

FINGERPRINT_FILE = "twostage.json"
_PAGE = 5000  # passages per Chroma get() while reading the corpus


class BM25Recall:
    """BM25 recall over the passages stored in ``chroma`` (a :class:`ChromaRecall`).

    Tokenisation is ``bm25s.tokenize`` with lower-casing and the ``stopwords`` list (default English);
    ``stemmer`` is an optional PyStemmer language (e.g. ``"english"``; default none, bm25s's default).
    ``recall_score`` is the BM25 score; passages sharing no term with the query (score 0) are never returned,
    so a search can return fewer than ``limit`` hits.

    Filters: ``where`` and ``where_document`` are the same Chroma filters as for dense recall. BM25 scores
    every passage, then keeps only the ids Chroma returns for ``get(where=..., where_document=...)``, so any
    filter Chroma supports works here too (at the cost of one ``get`` per filtered query).

    Freshness: the index is checked against Chroma on first use and whenever the collection's count changes
    (or after :meth:`add_texts` / :meth:`refresh`); it is rebuilt only if the fingerprint of ids and texts
    differs from the saved one. A passage *edited* in place by another process is picked up by
    :meth:`refresh`.

    ``index_dir``: where the index is saved; default ``<chroma path>/bm25/<collection>`` for an embedded
    Chroma, else ``<default db path>/bm25/<collection>``.

    >>> from twostage_integrations import BM25Recall, ChromaRecall
    >>> chroma = ChromaRecall("docs", path="/tmp/twostage-doctest")
    >>> bm25 = BM25Recall(chroma)
    >>> _ = bm25.add_texts(["Aspirin lowers the risk of stroke.", "Paris is the capital of France."])
    >>> bm25.search("aspirin stroke", limit=1)[0].text
    'Aspirin lowers the risk of stroke.'
    """

    score_kind: str = "bm25"  # recall_score scale, see docs/scores.md

    def __init__(
        self,
        chroma: ChromaRecall,
        *,
        index_dir: str | os.PathLike[str] | None = None,
        stopwords: str | Sequence[str] | None = "en",
        stemmer: str | None = None,
        k1: float = 1.5,
        b: float = 0.75,
        progress: bool = False,
    ) -> None:
        self.chroma = chroma
        self.name = f"bm25:{chroma.name}"
        self.stopwords = stopwords if isinstance(stopwords, str) or stopwords is None else list(stopwords)
        self.stemmer_language = stemmer
        self.k1, self.b = k1, b
        self.progress = progress
        self.index_dir = Path(index_dir) if index_dir is not None else _default_index_dir(chroma)
        self._lock = threading.Lock()
        self._retriever = None
        self._ids: list[str] = []
        self._texts: list[str] = []
        self._metas: list[dict[str, Any]] = []
        self._count = -1  # collection count when the index was last checked; -1 = check on next search

    # -- index lifecycle -------------------------------------------------------------------------------
    @property
    def _stemmer(self):
        if self.stemmer_language is None:
            return None
        import Stemmer

        return Stemmer.Stemmer(self.stemmer_language)

    def _tokenize(self, texts: Sequence[str], *, return_ids: bool):
        import bm25s

        return bm25s.tokenize(
            list(texts),
            stopwords=self.stopwords,
            stemmer=self._stemmer,
            return_ids=return_ids,
            show_progress=self.progress,
        )

    def _settings(self) -> dict[str, Any]:
        return {"stopwords": self.stopwords, "stemmer": self.stemmer_language, "k1": self.k1, "b": self.b}

    def _read_corpus(self) -> tuple[list[str], list[str], list[dict[str, Any]]]:
        collection = self.chroma.collection
        ids: list[str] = []
        texts: list[str] = []
        metas: list[dict[str, Any]] = []
        offset = 0
        while True:
            page = collection.get(include=["documents", "metadatas"], limit=_PAGE, offset=offset)
            ids.extend(page["ids"])
            texts.extend(doc or "" for doc in page["documents"])
            metas.extend(dict(m or {}) for m in page["metadatas"])
            if len(page["ids"]) < _PAGE:
                break
            offset += _PAGE
        return ids, texts, metas

    def _fingerprint(self, ids: Sequence[str], texts: Sequence[str]) -> str:
        digest = hashlib.sha256(json.dumps(self._settings(), sort_keys=True).encode())
        for doc_id, text in sorted(zip(ids, texts, strict=True)):
            digest.update(doc_id.encode("utf-8") + b"\0" + text.encode("utf-8") + b"\0")
        return digest.hexdigest()

    def refresh(self) -> None:
        """Re-read the collection; load the saved index if it still matches, else rebuild and save it."""
        import bm25s

        with self._lock:
            ids, texts, metas = self._read_corpus()
            fingerprint = self._fingerprint(ids, texts)
            stamp = self.index_dir / FINGERPRINT_FILE
            saved = json.loads(stamp.read_text()) if stamp.exists() else {}
            if saved.get("fingerprint") == fingerprint:
                retriever = bm25s.BM25.load(str(self.index_dir), show_progress=False)
                # row i of the saved index is saved["ids"][i]; get() order is not guaranteed to match
                row = {doc_id: i for i, doc_id in enumerate(ids)}
                order = [row[doc_id] for doc_id in saved["ids"]]
                ids, texts, metas = saved["ids"], [texts[i] for i in order], [metas[i] for i in order]
            else:
                log.info("building BM25 index for %r (%d passages) in %s", self.chroma.name, len(ids), self.index_dir)
                retriever = bm25s.BM25(k1=self.k1, b=self.b)
                if ids:
                    retriever.index(self._tokenize(texts, return_ids=True), show_progress=self.progress)
                    self.index_dir.mkdir(parents=True, exist_ok=True)
                    retriever.save(str(self.index_dir), show_progress=False)
                    stamp.write_text(json.dumps({"fingerprint": fingerprint, "ids": ids, **self._settings()}))
            self._retriever, self._ids, self._texts, self._metas = retriever, ids, texts, metas
            self._count = len(ids)

    def _ensure_index(self) -> None:
        if self._count < 0 or self.chroma.count() != self._count:
            self.refresh()

    # -- Recall protocol -------------------------------------------------------------------------------
    def add_texts(
        self,
        texts: Sequence[str],
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
        ids: Sequence[str] | None = None,
    ) -> AddResult:
        """Store passages in the underlying Chroma collection; the BM25 index follows on the next search."""
        result = self.chroma.add_texts(texts, metadatas=metadatas, ids=ids)
        self._count = -1  # even "unchanged" here may be new to the index when another recall wrote it first
        return result

    def search(
        self,
        query: str,
        limit: int = 20,
        *,
        where: Mapping[str, Any] | None = None,
        where_document: Mapping[str, Any] | None = None,
    ) -> list[Hit]:
        """Top ``limit`` passages by BM25 score (only passages sharing a term with the query)."""
        check_search_args(query, limit)
        self._ensure_index()
        if not self._ids:
            return []
        tokens = self._tokenize([query], return_ids=False)[0]
        scores = np.asarray(self._retriever.get_scores(tokens), dtype=np.float64)
        if where or where_document:
            allowed = set(
                self.chroma.collection.get(
                    where=dict(where) if where else None,
                    where_document=dict(where_document) if where_document else None,
                    include=[],
                )["ids"]
            )
            scores[[i for i, doc_id in enumerate(self._ids) if doc_id not in allowed]] = 0.0
        candidates = np.flatnonzero(scores > 0)
        # Highest score first; ties by index position so results are deterministic.
        order = candidates[np.lexsort((candidates, -scores[candidates]))][:limit]
        return [
            Hit(
                id=self._ids[i],
                text=self._texts[i],
                metadata=dict(self._metas[i]),
                score=float(scores[i]),
                recall_score=float(scores[i]),
                recall_rank=rank,
            )
            for rank, i in enumerate(order, start=1)
        ]

    async def asearch(
        self,
        query: str,
        limit: int = 20,
        *,
        where: Mapping[str, Any] | None = None,
        where_document: Mapping[str, Any] | None = None,
    ) -> list[Hit]:
        return await asyncio.to_thread(self.search, query, limit, where=where, where_document=where_document)

    @property
    def collection(self):
        """The Chroma collection the passages come from (raises if it does not exist)."""
        return self.chroma.collection

    def count(self) -> int:
        return self.chroma.count()

    def __repr__(self) -> str:
        return f"BM25Recall(collection={self.chroma.name!r}, stemmer={self.stemmer_language!r})"


def _default_index_dir(chroma: ChromaRecall) -> Path:
    settings = getattr(chroma.client, "get_settings", None)
    persist = settings().persist_directory if settings is not None and settings().is_persistent else None
    base = Path(persist) if persist else default_db_path()
    return base / "bm25" / chroma.name
