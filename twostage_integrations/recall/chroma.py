"""Stage 1 over a Chroma collection, with sentence-transformers embeddings computed here."""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..embeddings import Embedder, as_embedder
from ..errors import CollectionNotFoundError, InvalidParameterError
from ..hit import Hit
from ..validation import check_documents, check_positive_int, check_search_args
from .base import AddResult

log = logging.getLogger(__name__)

DB_ENV = "TWOSTAGE_DB"
MODEL_KEY = "twostage:embedding_model"
DIM_KEY = "twostage:dimension"


def default_db_path() -> Path:
    """``$TWOSTAGE_DB``, else ``$XDG_DATA_HOME/twostage/chroma`` (``~/.local/share/twostage/chroma``)."""
    if os.environ.get(DB_ENV):
        return Path(os.environ[DB_ENV]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "twostage" / "chroma"


def make_client(*, path: str | os.PathLike[str] | None = None, host: str | None = None, port: int | None = None):
    """An embedded ``PersistentClient`` by default; an ``HttpClient`` when ``host`` or ``port`` is given."""
    import chromadb

    if host is not None or port is not None:
        if path is not None:
            raise InvalidParameterError("pass either path (embedded Chroma) or host/port (Chroma server), not both")
        return chromadb.HttpClient(host=host or "localhost", port=int(port or 8000))
    db = Path(path).expanduser() if path is not None else default_db_path()
    db.mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(path=str(db))


def _cosine_from_distance(space: str):
    # Embeddings are unit length, so every Chroma space maps back to cosine similarity.
    if space == "l2":  # Chroma reports squared L2: |a-b|^2 = 2 - 2cos
        return lambda d: 1.0 - d / 2.0
    return lambda d: 1.0 - d  # "cosine" and "ip" both report 1 - dot


class ChromaRecall:
    """Dense recall from a Chroma collection.

    Where the collection lives, first match wins: ``collection`` is already a Chroma ``Collection``; a
    ``client`` you made; ``host``/``port`` of a running Chroma server; else an embedded database at
    ``path`` (default :func:`default_db_path`). New collections use cosine space;
    ``recall_score`` is the cosine similarity of query and passage (higher = better).

    ``embedding_model``: hub id or local folder (default all-MiniLM-L6-v2). Use the same model that
    wrote the collection; it is recorded in the collection metadata and a mismatch is reported.

    >>> recall = ChromaRecall("docs", path="/tmp/twostage-doctest")
    >>> recall.add_texts(["Aspirin lowers the risk of stroke.", "Paris is the capital of France."]).added
    2
    >>> recall.search("what is France's capital?", limit=1)[0].text
    'Paris is the capital of France.'
    """

    score_kind: str = "cosine"  # recall_score scale, see docs/scores.md

    def __init__(
        self,
        collection: str | Any,
        *,
        path: str | os.PathLike[str] | None = None,
        host: str | None = None,
        port: int | None = None,
        client: Any = None,
        embedding_model: str | os.PathLike[str] | Embedder | None = None,
        batch_size: int = 64,
        progress: bool = True,
    ) -> None:
        self.embedder = as_embedder(embedding_model)
        self.batch_size = batch_size
        self.progress = progress
        if isinstance(collection, str):
            check_collection_name(collection)
            self.name = collection
            self._collection = None
            self.client = client if client is not None else make_client(path=path, host=host, port=port)
        else:  # an existing chromadb Collection
            self.name = collection.name
            self._collection = collection
            self.client = client

    # -- collection handling -------------------------------------------------------------------------
    def _get_collection(self, *, create: bool):
        if self._collection is not None:
            return self._collection
        if create:
            self._collection = self.client.get_or_create_collection(
                self.name,
                embedding_function=None,
                configuration={"hnsw": {"space": "cosine"}},
                metadata={MODEL_KEY: self.embedder.name, DIM_KEY: self.embedder.dimension},
            )
        else:
            from chromadb.errors import NotFoundError

            try:
                self._collection = self.client.get_collection(self.name, embedding_function=None)
            except NotFoundError as exc:
                raise CollectionNotFoundError(
                    f"collection {self.name!r} does not exist here; create it with "
                    f"`twostage ingest PATH --collection {self.name}` (or add_texts) first"
                ) from exc
        self._check_embedder(self._collection)
        return self._collection

    @property
    def collection(self):
        """The Chroma ``Collection`` (raises :class:`CollectionNotFoundError` if it does not exist)."""
        return self._get_collection(create=False)

    def _check_embedder(self, collection) -> None:
        meta = collection.metadata or {}
        recorded = meta.get(MODEL_KEY)
        if recorded and recorded != self.embedder.name:
            log.warning(
                "collection %r was written with embedding model %r but is queried with %r; "
                "results are only meaningful with the same model",
                self.name,
                recorded,
                self.embedder.name,
            )

    def _space(self, collection) -> str:
        config = getattr(collection, "configuration", None) or {}
        hnsw = config.get("hnsw") or {}
        return hnsw.get("space") or (collection.metadata or {}).get("hnsw:space") or "l2"

    def count(self) -> int:
        return self.collection.count()

    # -- writing ---------------------------------------------------------------------------------------
    def add_texts(
        self,
        texts: Sequence[str],
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
        ids: Sequence[str] | None = None,
    ) -> AddResult:
        """Upsert passages. Ids are the caller's, else a hash of the text, so re-adding stores nothing
        twice. Passages already stored with the same text and metadata are not re-embedded, so a re-run
        after an interruption only does the missing work. Everything is validated before any write."""
        texts, metas, doc_ids = check_documents(texts, metadatas, ids)
        result = AddResult()
        if not texts:
            return result
        collection = self._get_collection(create=True)
        step = max(self.batch_size, 256)
        with tqdm(total=len(texts), desc=f"adding to {self.name}", unit="passage", disable=not self.progress) as bar:
            for start in range(0, len(texts), step):
                batch = slice(start, start + step)
                result += self._upsert_batch(collection, texts[batch], metas[batch], doc_ids[batch])
                bar.update(len(doc_ids[batch]))
        return result

    def _upsert_batch(self, collection, texts, metas, ids) -> AddResult:
        stored = collection.get(ids=ids, include=["documents", "metadatas"])
        existing = {
            i: (doc, meta or {})
            for i, doc, meta in zip(stored["ids"], stored["documents"], stored["metadatas"], strict=True)
        }
        todo = [k for k, doc_id in enumerate(ids) if existing.get(doc_id) != (texts[k], metas[k])]
        result = AddResult(ids=list(ids))
        result.unchanged = len(ids) - len(todo)
        if todo:
            vectors = self.embedder.embed([texts[k] for k in todo])
            collection.upsert(
                ids=[ids[k] for k in todo],
                embeddings=vectors,
                documents=[texts[k] for k in todo],
                metadatas=[metas[k] or None for k in todo],
            )
            result.updated = sum(1 for k in todo if ids[k] in existing)
            result.added = len(todo) - result.updated
        return result

    # -- reading ---------------------------------------------------------------------------------------
    def search(
        self,
        query: str,
        limit: int = 20,
        *,
        where: Mapping[str, Any] | None = None,
        where_document: Mapping[str, Any] | None = None,
        num_candidates: int | None = None,
    ) -> list[Hit]:
        """Top ``limit`` passages by cosine similarity. ``where``/``where_document`` are Chroma filters,
        passed through. ``num_candidates`` sets the HNSW search depth (``ef_search``) for this call."""
        check_search_args(query, limit)
        collection = self.collection
        vector = self.embedder.embed_query(query)
        with self._ef_search(collection, num_candidates):
            res = collection.query(
                query_embeddings=[vector],
                n_results=limit,
                where=dict(where) if where else None,
                where_document=dict(where_document) if where_document else None,
                include=["documents", "metadatas", "distances"],
            )
        to_cosine = _cosine_from_distance(self._space(collection))
        hits = []
        for rank, (doc_id, text, meta, dist) in enumerate(
            zip(res["ids"][0], res["documents"][0], res["metadatas"][0], res["distances"][0], strict=True),
            start=1,
        ):
            score = float(to_cosine(dist))
            hits.append(
                Hit(
                    id=doc_id,
                    text=text or "",
                    metadata=dict(meta or {}),
                    score=score,
                    recall_score=score,
                    recall_rank=rank,
                )
            )
        return hits

    async def asearch(
        self,
        query: str,
        limit: int = 20,
        *,
        where: Mapping[str, Any] | None = None,
        where_document: Mapping[str, Any] | None = None,
        num_candidates: int | None = None,
    ) -> list[Hit]:
        return await asyncio.to_thread(
            self.search, query, limit, where=where, where_document=where_document, num_candidates=num_candidates
        )

    @contextmanager
    def _ef_search(self, collection, num_candidates: int | None):
        # Chroma has no per-query ef; set it on the collection for this call and put it back after.
        if num_candidates is None:
            yield
            return
        check_positive_int(num_candidates, "num_candidates")
        previous = ((getattr(collection, "configuration", None) or {}).get("hnsw") or {}).get("ef_search")
        collection.modify(configuration={"hnsw": {"ef_search": num_candidates}})
        try:
            yield
        finally:
            if previous is not None and previous != num_candidates:
                collection.modify(configuration={"hnsw": {"ef_search": previous}})

    def __repr__(self) -> str:
        return f"ChromaRecall(collection={self.name!r}, embedding_model={self.embedder.name!r})"

    def get_or_create_collection(self):
        """The Chroma ``Collection``, created (cosine space, embedding model recorded) if it does not exist yet."""
        return self._get_collection(create=True)


def check_collection_name(name: str) -> str:
    """Chroma's naming rule, checked up front so the error says what to do."""

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{1,510}[A-Za-z0-9]", name):
        raise InvalidParameterError(
            f"collection name {name!r} is not valid: use 3-512 characters from letters, digits, '.', '_' "
            f"and '-', starting and ending with a letter or digit"
        )
    return name
