"""The write path of :class:`~twostage_integrations.recall.chroma.ChromaRecall`: adding, updating and deleting
passages, and the version stamp every write changes (kept apart from the read path, which is most of chroma.py)."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from itertools import islice
from typing import TYPE_CHECKING, Any, TypeVar

from tqdm.auto import tqdm

from ..embeddings import BaseEmbedder
from ..validation import check_documents, check_positive_int, content_id
from .base import AddResult

# A stamp our writers change on every write (add/update/delete), so readers of derived indexes (BM25) can tell
# the collection changed -- also an edit in place by another process -- with one metadata read.
VERSION_KEY = "twostage:version"
# Passages per embed-and-write batch of add_stream (twostage ingest --batch-size): chosen by measurement, see
# docs/ingest.md.
STREAM_BATCH_SIZE = 512

T = TypeVar("T")


class ChromaWriteMixin:
    """Writes of :class:`~twostage_integrations.recall.chroma.ChromaRecall` (which supplies what is declared here)."""

    name: str
    embedder: BaseEmbedder
    batch_size: int
    show_progress: bool
    _writes: int
    _write_lock: threading.Lock
    _embedded: int

    if TYPE_CHECKING:  # supplied by ChromaRecall

        def errors(self) -> AbstractContextManager[None]: ...

        def _get_collection(self, *, create: bool) -> Any: ...

        def _fresh_metadata(self) -> dict[str, Any]: ...

        @property
        def collection(self) -> Any: ...

    def _bump_version(self, collection, op: str, ids: Sequence[str], texts: Sequence[str] | None = None) -> None:
        """Chain a new stamp onto the stored one: sha256(previous stamp, operation, ids and text hashes)."""
        with self._write_lock:
            self._bump_version_locked(collection, op, ids, texts)

    def _bump_version_locked(self, collection, op: str, ids: Sequence[str], texts: Sequence[str] | None) -> None:
        digest = hashlib.sha256()
        meta = self._fresh_metadata()
        digest.update(f"{meta.get(VERSION_KEY, '')}\n{op}\n".encode())
        rows = sorted(zip(ids, texts if texts is not None else [""] * len(ids), strict=True))
        for doc_id, text in rows:
            digest.update(doc_id.encode() + b"\0" + hashlib.sha256(text.encode()).digest())
        # modify() replaces the whole metadata; legacy hnsw:* keys cannot be re-sent (Chroma refuses), and the
        # HNSW settings live in the collection configuration anyway.
        keep = {k: v for k, v in meta.items() if not k.startswith("hnsw:")}
        collection.modify(metadata={**keep, VERSION_KEY: digest.hexdigest()[:32]})
        self._writes += 1

    # -- writing ---------------------------------------------------------------------------------------
    def add_texts(
        self,
        texts: Sequence[str],
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
        ids: Sequence[str] | None = None,
        *,
        show_progress: bool | None = None,
    ) -> AddResult:
        """Upsert passages. Ids are the caller's, else a hash of the text, so re-adding stores nothing
        twice. Passages already stored with the same text and metadata are not re-embedded, so a re-run
        after an interruption only does the missing work. Everything is validated before any write.

        Args:
            texts: The passages.
            metadatas: One metadata dict (or ``None``) per passage.
            ids: One id per passage; default a hash of the text.
            show_progress: A progress bar over the passages on stderr; default :attr:`show_progress` (off).

        Returns:
            How many passages were added, updated or already present, and their ids.

        Raises:
            InvalidDocumentError: Texts, metadata or ids that cannot be stored (nothing is written).
            ModelLoadError: The embedding model could not be loaded.
        """
        texts, metas, doc_ids = check_documents(texts, metadatas, ids)
        result = AddResult()
        if not texts:
            return result
        show = self.show_progress if show_progress is None else show_progress
        collection = self._get_collection(create=True)
        step = max(self.batch_size, 256)
        with (
            self.errors(),
            tqdm(total=len(texts), desc=f"adding to {self.name}", unit="passage", disable=not show) as bar,
        ):
            for start in range(0, len(texts), step):
                batch = slice(start, start + step)
                result += self._upsert_batch(collection, texts[batch], metas[batch], doc_ids[batch])
                bar.update(len(doc_ids[batch]))
        return result

    def add_stream(
        self,
        records: Iterable[tuple[str, Mapping[str, Any] | None, str | None]],
        *,
        batch_size: int = STREAM_BATCH_SIZE,
        total: int | None = None,
        show_progress: bool | None = None,
    ) -> AddResult:
        """Upsert passages from an iterable, one batch at a time: at most ``batch_size`` passages are held, so a
        corpus of any size streams through (what ``twostage ingest`` does). Before a batch is embedded, Chroma is
        asked which of its ids are stored; those stored with the same text and metadata are skipped, so re-running
        an interrupted ingest embeds only what is missing.

        Unlike :meth:`add_texts`, a batch is validated when it is reached: a bad passage is refused after the
        batches before it were stored (validate up front, e.g. with
        :func:`~twostage_integrations.ingest.scan_documents`, when that matters).

        Args:
            records: ``(text, metadata or None, id or None)`` per passage; a ``None`` id means a hash of the text.
            batch_size: Passages per embed-and-write batch.
            total: How many records there are, for the progress bar (optional).
            show_progress: A progress bar over the passages (with passages/s) on stderr; default
                :attr:`show_progress` (off).

        Returns:
            How many passages were added, updated or already present; ``ids`` is left empty (not held).

        Raises:
            InvalidDocumentError: A batch with texts, metadata or ids that cannot be stored (nothing of it written).
            InvalidParameterError: ``batch_size`` below 1.
            ModelLoadError: The embedding model could not be loaded.
        """
        check_positive_int(batch_size, "batch_size")
        show = self.show_progress if show_progress is None else show_progress
        result = AddResult()
        collection = None
        with (
            self.errors(),
            tqdm(total=total, desc=f"adding to {self.name}", unit="passage", disable=not show) as bar,
        ):
            for batch in _batches(records, batch_size):
                texts, metas, ids = check_documents(
                    [text for text, _, _ in batch],
                    [meta for _, meta, _ in batch],
                    [doc_id if doc_id is not None else content_id(text) for text, _, doc_id in batch],
                )
                if collection is None:  # on the first batch: an empty stream creates nothing
                    collection = self._get_collection(create=True)
                result += self._upsert_batch(collection, texts, metas, ids, keep_ids=False)
                bar.set_postfix(new=result.added, stored=result.unchanged, refresh=False)
                bar.update(len(batch))
        return result

    @property
    def embedded(self) -> int:
        """How many passages this object has embedded to write them (a re-run that finds them stored adds 0)."""
        return self._embedded

    def _upsert_batch(self, collection, texts, metas, ids, *, keep_ids: bool = True) -> AddResult:
        # Which ids are stored costs one id-only lookup; texts and metadata are fetched only for those, to tell
        # an unchanged passage (skipped, not re-embedded) from an updated one.
        present = collection.get(ids=ids, include=[])["ids"]
        existing: dict[str, tuple[str, dict[str, Any]]] = {}
        if present:
            stored = collection.get(ids=present, include=["documents", "metadatas"])
            existing = {
                i: (doc, meta or {})
                for i, doc, meta in zip(stored["ids"], stored["documents"], stored["metadatas"], strict=True)
            }
        todo = [k for k, doc_id in enumerate(ids) if existing.get(doc_id) != (texts[k], metas[k])]
        result = AddResult(ids=list(ids) if keep_ids else [])
        result.unchanged = len(ids) - len(todo)
        if todo:
            vectors = self._vectors(collection, texts, ids, todo, existing)
            collection.upsert(
                ids=[ids[k] for k in todo],
                embeddings=vectors,
                documents=[texts[k] for k in todo],
                metadatas=[metas[k] or None for k in todo],
            )
            result.updated = sum(1 for k in todo if ids[k] in existing)
            result.added = len(todo) - result.updated
            # After the data: a reader that sees the new stamp also sees the rows it stands for.
            self._bump_version(collection, "upsert", [ids[k] for k in todo], [texts[k] for k in todo])
        return result

    def _vectors(self, collection, texts, ids, todo, existing) -> Any:
        """The vectors to write for ``todo``: a passage stored with the same text and other metadata keeps its
        stored vector (the same file ingested from another path changes only ``source``); the rest are embedded."""
        import numpy as np

        keep: list[int] = []  # same text stored: reuse its vector
        fresh: list[int] = []  # new or changed text: embed
        for k in todo:
            (keep if ids[k] in existing and existing[ids[k]][0] == texts[k] else fresh).append(k)
        rows: dict[int, Any] = {}
        if keep:
            stored = collection.get(ids=[ids[k] for k in keep], include=["embeddings"])
            by_id = dict(zip(stored["ids"], stored["embeddings"], strict=True))
            rows |= {k: np.asarray(by_id[ids[k]], dtype=np.float32) for k in keep}
        if fresh:
            embedded = self.embedder.embed([texts[k] for k in fresh])
            self._embedded += len(fresh)
            rows |= {k: np.asarray(v, dtype=np.float32) for k, v in zip(fresh, embedded, strict=True)}
        return np.stack([rows[k] for k in todo])


def _batches(records: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of ``size`` records (the last may be shorter), pulling only one batch from ``records``."""
    iterator = iter(records)
    while batch := list(islice(iterator, size)):
        yield batch
