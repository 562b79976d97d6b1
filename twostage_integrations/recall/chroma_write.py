"""The write path of :class:`~twostage_integrations.recall.chroma.ChromaRecall`: adding, updating and deleting
passages, and the version stamp every write changes (kept apart from the read path, which is most of chroma.py)."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from ..embeddings import BaseEmbedder
from ..validation import check_documents
from .base import AddResult

# A stamp our writers change on every write (add/update/delete), so readers of derived indexes (BM25) can tell
# the collection changed -- also an edit in place by another process -- with one metadata read.
VERSION_KEY = "twostage:version"


class ChromaWriteMixin:
    """Writes of :class:`~twostage_integrations.recall.chroma.ChromaRecall` (which supplies what is declared here)."""

    name: str
    embedder: BaseEmbedder
    batch_size: int
    show_progress: bool
    _writes: int
    _write_lock: threading.Lock

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
            # After the data: a reader that sees the new stamp also sees the rows it stands for.
            self._bump_version(collection, "upsert", [ids[k] for k in todo], [texts[k] for k in todo])
        return result
