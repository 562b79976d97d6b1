"""Sparse (keyword) recall with BM25 (``bm25s``) over the passages of a Chroma collection.

Chroma stays the one place passages live; the BM25 index is derived from it, saved beside the Chroma data
(``<db>/bm25/<collection>/<fingerprint>/``) and rebuilt only when the collection's ids or texts change. A saved
snapshot also keeps the passages' texts and metadata and the collection version it was built at, so a new process
whose collection still has that version loads it without reading the corpus from Chroma (``twostage ingest`` saves
one; :meth:`BM25Recall.save` / :func:`~twostage_integrations.recall.factory.persist_bm25` from Python).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..extras import require_extra
from ..hit import Hit
from ..validation import check_search_args
from .base import AddResult, BaseRecall
from .chroma import ChromaRecall, check_filters, default_db_path

log = logging.getLogger(__name__)

FINGERPRINT_FILE = "twostage.json"  # fingerprint, ids, settings and the collection version; written last
# {"texts": [...], "metadatas": [...]} in the index's row order: hits need them, Chroma is not asked. One JSON
# document, because one json.loads reads it 2-3x faster than a line per passage (a cold hybrid query waits for it);
# it is still written page by page (_CorpusWriter).
CORPUS_FILE = "corpus.json"
_PAGE = 5000  # passages per Chroma get() while reading the corpus, and per tokenizer call


@dataclass(frozen=True)
class _Snapshot:
    """Everything one search reads, built completely before it is published with one assignment.

    ``version`` is the collection's ``(count, stamp)`` read *before* the corpus, so a write that lands while the
    corpus is read changes the stamp again and the next check rebuilds.
    """

    retriever: Any
    ids: tuple[str, ...]
    texts: tuple[str, ...]
    metas: tuple[dict[str, Any], ...]
    version: tuple[int, str]
    fingerprint: str


class BM25Recall(BaseRecall):
    """BM25 recall over the passages stored in a :class:`ChromaRecall`.

    Tokenisation is ``bm25s.tokenize`` with lower-casing, stopwords and an optional stemmer.
    ``recall_score`` is the BM25 score; passages sharing no term with the query (score 0) are never returned,
    so a search can return fewer than ``limit`` hits.

    Filters: ``where`` and ``where_document`` are the same Chroma filters as for dense recall. BM25 scores
    every passage, then keeps only the ids Chroma returns for ``get(where=..., where_document=...)``, so any
    filter Chroma supports works here too (at the cost of one ``get`` per filtered query).

    Freshness: searches read an immutable snapshot (index, ids, texts, metadata) that is swapped in with one
    assignment, so a search never sees a half-built index and needs no lock. Whether the collection changed is
    checked with its version stamp (count + a hash chain of written ids and texts, kept in the collection
    metadata by :meth:`ChromaRecall.add_texts` / :meth:`ChromaRecall.delete` in any process): right after a
    write through this process, else at most every ``refresh_interval`` seconds (default 1; two small Chroma
    calls, never one per query). A changed stamp rebuilds the snapshot (loading the saved index when the
    corpus fingerprint matches it). :meth:`refresh` re-reads the whole corpus at once, which also catches
    writes made with the raw Chroma API (they do not move the stamp).

    Cold start: a snapshot saved at the collection's current version (by :meth:`save`, which ``twostage ingest``
    calls after writing) is loaded from disk with its texts and metadata, so the first search reads no corpus from
    Chroma. A snapshot saved at another version (another writer changed the collection since) is not used: the
    corpus is read and the index rebuilt (or loaded by fingerprint when the passages are the same), then saved.

    Args:
        chroma: The collection the passages live in.
        index_dir: Where the index is saved; default ``<chroma path>/bm25/<collection>`` for an embedded Chroma,
            else ``<default db path>/bm25/<collection>``.
        stopwords: A bm25s stopword language (default English) or a list of words; ``None`` keeps every word.
        stemmer: A PyStemmer language (e.g. ``"english"``); default none, bm25s's default.
        k1: BM25's term-frequency saturation.
        b: BM25's length normalisation.
        progress: Show bm25s's progress bars while indexing.
        refresh_interval: Seconds between version checks when nothing was written through this process.

    Raises:
        MissingDependencyError: If ``bm25s`` (or PyStemmer, when ``stemmer`` is given) is not installed.
        InvalidParameterError: If ``refresh_interval`` is negative or not a number.

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
        refresh_interval: float = 1.0,
    ) -> None:
        require_extra("bm25s", "eval", feature="BM25 recall (--recall bm25/hybrid)")
        if stemmer is not None:
            require_extra("Stemmer", "eval", feature=f"stemmer={stemmer!r}")
        if isinstance(refresh_interval, bool) or not isinstance(refresh_interval, (int, float)) or refresh_interval < 0:
            from ..errors import InvalidParameterError

            raise InvalidParameterError(f"refresh_interval must be seconds >= 0, got {refresh_interval!r}")
        self.refresh_interval = float(refresh_interval)
        self.chroma = chroma
        self.name = f"bm25:{chroma.name}"
        self.stopwords = stopwords if isinstance(stopwords, str) or stopwords is None else list(stopwords)
        self.stemmer_language = stemmer
        self.k1, self.b = k1, b
        self.progress = progress
        self.index_dir = Path(index_dir) if index_dir is not None else _default_index_dir(chroma)
        self._lock = threading.Lock()  # one rebuild at a time; searches never take it once a snapshot exists
        self._snapshot: _Snapshot | None = None
        self._checked_at = float("-inf")  # monotonic time of the last version check
        self._writes_seen = -1  # chroma.writes at the last check: a write through this process forces a check
        self._stale = True  # set by our own add_texts/delete: check before the next search

    # -- index lifecycle -------------------------------------------------------------------------------
    @property
    def _stemmer(self):
        if self.stemmer_language is None:
            return None
        import Stemmer

        return Stemmer.Stemmer(self.stemmer_language)

    def _tokenize_query(self, query: str) -> list[str]:
        import bm25s

        return bm25s.tokenize(
            [query], stopwords=self.stopwords, stemmer=self._stemmer, return_ids=False, show_progress=False
        )[0]

    def _tokens(self) -> _Tokens:
        return _Tokens(self.stopwords, self._stemmer)

    def _index(self, tokens: _Tokens):
        """The BM25 index over ``tokens``; ``None`` when nothing can match (no passages, or only stopwords)."""
        import bm25s

        if not tokens.ids or not tokens.vocab:
            return None
        retriever = bm25s.BM25(k1=self.k1, b=self.b)
        retriever.index(bm25s.tokenization.Tokenized(ids=tokens.ids, vocab=tokens.vocab), show_progress=self.progress)
        return retriever

    def _settings(self) -> dict[str, Any]:
        return {"stopwords": self.stopwords, "stemmer": self.stemmer_language, "k1": self.k1, "b": self.b}

    def _pages(self) -> Iterator[tuple[list[str], list[str], list[dict[str, Any]]]]:
        """The collection's (ids, texts, metadata), ``_PAGE`` passages at a time."""
        collection = self.chroma.collection
        offset = 0
        while True:
            with self.chroma.errors():
                page = collection.get(include=["documents", "metadatas"], limit=_PAGE, offset=offset)
            yield (
                list(page["ids"]),
                [doc or "" for doc in page["documents"]],
                [dict(m or {}) for m in page["metadatas"]],
            )
            if len(page["ids"]) < _PAGE:
                return
            offset += _PAGE

    def _read_corpus(self) -> tuple[list[str], list[str], list[dict[str, Any]]]:
        ids: list[str] = []
        texts: list[str] = []
        metas: list[dict[str, Any]] = []
        for page_ids, page_texts, page_metas in self._pages():
            ids.extend(page_ids)
            texts.extend(page_texts)
            metas.extend(page_metas)
        return ids, texts, metas

    def _fingerprint(self, ids: Sequence[str], texts: Sequence[str]) -> str:
        fingerprint = _Fingerprint(self._settings())
        fingerprint.update(ids, texts)
        return fingerprint.hexdigest()

    def mark_stale(self) -> None:
        """Make the next search check the collection's version stamp (and rebuild if it moved).

        Call it after writing to the collection other than through this object or its :class:`ChromaRecall`
        (e.g. another recall sharing the collection), so the next search does not wait for
        ``refresh_interval``.
        """
        self._stale = True

    def refresh(self) -> None:
        """Re-read the whole collection now and rebuild the snapshot if ids or texts differ from the index.

        This also catches edits made with the raw Chroma API, which do not move the version stamp.
        """
        with self._lock:
            self._rebuild(self.chroma.version())

    def _needs_check(self) -> bool:
        return (
            self._snapshot is None
            or self._stale
            or self._writes_seen != self.chroma.writes
            or time.monotonic() - self._checked_at >= self.refresh_interval
        )

    def _current(self) -> _Snapshot:
        """The snapshot to search, after the cheap version check if one is due."""
        if self._needs_check():
            with self._lock:
                if self._needs_check():  # another thread may have just done it
                    version = self.chroma.version()
                    snapshot = self._snapshot
                    if snapshot is not None and version == snapshot.version:
                        self._mark_checked()
                    elif not self._publish_saved(version):  # no snapshot saved at this version: read the corpus
                        self._rebuild(version)
        snapshot = self._snapshot
        assert snapshot is not None
        return snapshot

    def _mark_checked(self) -> None:
        self._checked_at = time.monotonic()
        self._writes_seen = self.chroma.writes
        self._stale = False

    def _publish_saved(self, version: tuple[int, str]) -> bool:
        """Publish the snapshot saved at ``version`` (no corpus read); False when none is. Caller holds the lock."""
        writes = self.chroma.writes
        loaded = self._load_stamped(version)
        if loaded is None:
            return False
        self._snapshot = loaded
        self._checked_at, self._writes_seen, self._stale = time.monotonic(), writes, False
        return True

    def save(self) -> Path | None:
        """Bring the snapshot up to the collection's current version and save it, stamped with that version, so
        the next process (a cold ``twostage query --recall hybrid``, a server start) loads it without reading
        the corpus from Chroma. ``twostage ingest`` calls this after writing; call it after
        :meth:`ChromaRecall.add_texts` in Python (or use
        :func:`~twostage_integrations.recall.factory.persist_bm25`).

        A collection written only with the raw Chroma API (no version stamp) is still indexed and saved, but a new
        process then re-reads its corpus to check it (an edit in place would not change the count).

        When this object's snapshot is not current, the index is built from the collection page by page and
        written as it goes, without being loaded into memory (an ingest of 200,000 passages would otherwise hold
        the whole corpus twice at its end); the next search loads it from disk.

        Returns:
            The folder the snapshot is saved in; ``None`` when there is nothing to index (an empty collection,
            or only stopwords) or the disk refused the write (logged).

        Raises:
            CollectionNotFoundError: The collection (or the database) does not exist.
        """
        with self._lock:
            version = self.chroma.version()
            snapshot = self._snapshot
            if snapshot is not None and snapshot.version == version:
                return self._write(snapshot)
            saved = self._stamped_folder(version)
            return saved if saved is not None else self._save_streamed(version)

    def _save_streamed(self, version: tuple[int, str]) -> Path | None:
        """Read the collection page by page into a new index folder: the corpus file is written as pages come and
        only ids and token ids stay in memory. Caller holds the lock."""
        try:
            with self._temp_folder() as tmp:
                ids, tokens, fingerprint = self._stream_corpus(tmp / CORPUS_FILE)
                folder = self.index_dir / fingerprint[:32]
                stamp = self._stamp(fingerprint, ids, version)
                if folder.is_dir() and _restamp(tmp / CORPUS_FILE, folder, stamp):  # only metadata changed: keep it
                    return folder
                retriever = self._index(tokens)
                del tokens
                if retriever is None:  # no passages, or only stopwords: nothing to save
                    return None
                log.info("saving the BM25 index of %r (%d passages) in %s", self.chroma.name, len(ids), folder)
                retriever.save(str(tmp), show_progress=False)
                _write_json(tmp / FINGERPRINT_FILE, stamp)
                self._install(tmp, folder)
        except (OSError, TypeError, ValueError) as exc:  # a full or read-only disk; metadata JSON cannot hold
            log.warning("could not save the BM25 index in %s (%s); searches build it in memory", self.index_dir, exc)
            return None
        return folder

    def _stream_corpus(self, path: Path) -> tuple[list[str], _Tokens, str]:
        """Write the collection's passages to ``path`` (the corpus file) and tokenise them, a page at a time:
        (ids in row order, their tokens, the corpus fingerprint)."""
        ids: list[str] = []
        tokens = self._tokens()
        fingerprint = _Fingerprint(self._settings())
        with _CorpusWriter(path) as corpus:
            for page_ids, page_texts, page_metas in self._pages():
                ids.extend(page_ids)
                tokens.add(page_texts)
                fingerprint.update(page_ids, page_texts)
                corpus.add(page_texts, page_metas)
        return ids, tokens, fingerprint.hexdigest()

    def _rebuild(self, version: tuple[int, str]) -> None:
        """Build the next snapshot completely, then publish it with one assignment. Caller holds the lock."""
        writes = self.chroma.writes
        ids, texts, metas = self._read_corpus()
        fingerprint = self._fingerprint(ids, texts)
        current = self._snapshot
        if current is not None and current.fingerprint == fingerprint:  # same ids and texts: keep the index
            new_metas = tuple(metas_by(current.ids, ids, metas))  # metadata may still have changed
            snapshot = _Snapshot(current.retriever, current.ids, current.texts, new_metas, version, fingerprint)
        else:
            snapshot = self._load_or_build(ids, texts, metas, fingerprint, version)
        self._snapshot = snapshot
        self._checked_at, self._writes_seen, self._stale = time.monotonic(), writes, False

    def _load_or_build(self, ids, texts, metas, fingerprint: str, version: tuple[int, str]) -> _Snapshot:
        folder = self.index_dir / fingerprint[:32]
        saved = self._load(folder, fingerprint)
        if saved is not None:
            retriever, saved_ids = saved
            # row i of the saved index is saved_ids[i]; get() order is not guaranteed to match
            row = {doc_id: i for i, doc_id in enumerate(ids)}
            order = [row[doc_id] for doc_id in saved_ids]
            snapshot = _Snapshot(
                retriever,
                tuple(saved_ids),
                tuple(texts[i] for i in order),
                tuple(metas[i] for i in order),
                version,
                fingerprint,
            )
            self._write(snapshot)  # same passages at a new version (or an older save): stamp it for the next process
            return snapshot
        log.info("building BM25 index for %r (%d passages) in %s", self.chroma.name, len(ids), folder)
        tokens = self._tokens()
        for start in range(0, len(texts), _PAGE):
            tokens.add(texts[start : start + _PAGE])
        snapshot = _Snapshot(self._index(tokens), tuple(ids), tuple(texts), tuple(metas), version, fingerprint)
        del tokens
        self._write(snapshot)
        return snapshot

    def _load(self, folder: Path, fingerprint: str):
        import bm25s

        stamp = folder / FINGERPRINT_FILE
        if not stamp.is_file():
            return None
        try:
            saved = json.loads(stamp.read_text())
            if saved.get("fingerprint") != fingerprint:
                return None
            return bm25s.BM25.load(str(folder), show_progress=False), list(saved["ids"])
        except (OSError, ValueError, KeyError) as exc:  # removed or half-written by another process: rebuild
            log.warning("could not load the saved BM25 index in %s (%s); rebuilding it", folder, exc)
            return None

    def _stamp(self, fingerprint: str, ids: Sequence[str], version: tuple[int, str]) -> dict[str, Any]:
        return {"fingerprint": fingerprint, "ids": list(ids), "version": list(version), **self._settings()}

    def _write(self, snapshot: _Snapshot) -> Path | None:
        """Save ``snapshot`` unless its folder already holds it at this version; the folder, or None (nothing to
        index, or the disk refused: a read-only disk only costs a rebuild next time)."""
        if snapshot.retriever is None:
            return None
        folder = self.index_dir / snapshot.fingerprint[:32]
        try:
            saved = json.loads((folder / FINGERPRINT_FILE).read_text())
            if saved.get("version") == list(snapshot.version) and (folder / CORPUS_FILE).is_file():
                return folder  # already there, stamped with this version
        except (OSError, ValueError):
            pass  # not saved yet (or half-written by a crashed process): write it below
        try:
            if folder.is_dir():  # same passages (same fingerprint): only the corpus file and the stamp change
                self._write_files(folder, snapshot)
            else:
                self._save(snapshot, folder)
        except (OSError, TypeError, ValueError) as exc:  # a full or read-only disk; metadata JSON cannot hold
            log.warning("could not save the BM25 index in %s (%s); it lives in memory only", self.index_dir, exc)
            return None
        return folder

    def _write_files(self, folder: Path, snapshot: _Snapshot) -> None:
        """The corpus file, then the stamp, each replaced whole: a reader that sees a version sees its corpus."""
        corpus = _temp_name(folder / CORPUS_FILE)
        with _CorpusWriter(corpus) as writer:
            writer.add(snapshot.texts, snapshot.metas)
        os.replace(corpus, folder / CORPUS_FILE)
        _write_json(folder / FINGERPRINT_FILE, self._stamp(snapshot.fingerprint, snapshot.ids, snapshot.version))

    def _save(self, snapshot: _Snapshot, folder: Path) -> None:
        """Write to a temporary folder, then install it (:meth:`_install`); a failed write leaves no folder."""
        with self._temp_folder() as tmp:
            snapshot.retriever.save(str(tmp), show_progress=False)
            self._write_files(tmp, snapshot)
            self._install(tmp, folder)

    @contextlib.contextmanager
    def _temp_folder(self) -> Iterator[Path]:
        """A new ``.tmp-`` folder in the index directory for one save, removed on the way out: empty once
        :meth:`_install` has renamed it, or whatever a failed write or an empty index left in it."""
        self.index_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.index_dir))
        try:
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _install(self, tmp: Path, folder: Path) -> None:
        """Rename the complete folder ``tmp`` to ``folder``: another process loading this index sees all of it or
        none of it. When ``folder`` exists (the same passages saved before, here or by another process: the same
        index), only its corpus file and stamp are replaced, stamp last (what is left of ``tmp``
        goes with :meth:`_temp_folder`). Folders of older fingerprints are removed."""
        try:
            os.rename(tmp, folder)
        except OSError:
            for name in (CORPUS_FILE, FINGERPRINT_FILE):
                os.replace(tmp / name, folder / name)
        for old in self.index_dir.iterdir():
            if old.is_dir() and old.name != folder.name and not old.name.startswith(".tmp-"):
                shutil.rmtree(old, ignore_errors=True)

    def _load_stamped(self, version: tuple[int, str]) -> _Snapshot | None:
        """The snapshot saved at ``version`` with these settings, read from disk only; None when there is none."""
        import bm25s

        for folder, saved in self._stamped(version):
            try:
                corpus = json.loads((folder / CORPUS_FILE).read_text(encoding="utf-8"))
                ids, texts, metas = saved["ids"], corpus["texts"], corpus["metadatas"]
                if not len(ids) == len(texts) == len(metas):
                    continue
                retriever = bm25s.BM25.load(str(folder), show_progress=False)
            except (OSError, ValueError, KeyError) as exc:  # removed or half-written by another process
                log.debug("saved BM25 snapshot in %s not usable (%s)", folder, exc)
                continue
            log.info("loaded the BM25 index of %r at its current version from %s", self.chroma.name, folder)
            fingerprint = saved["fingerprint"]
            return _Snapshot(retriever, tuple(ids), tuple(texts), tuple(map(dict, metas)), version, fingerprint)
        return None

    def _stamped_folder(self, version: tuple[int, str]) -> Path | None:
        """The folder of a snapshot saved at ``version`` with these settings, without loading it; None if none."""
        return next((folder for folder, _ in self._stamped(version) if (folder / CORPUS_FILE).is_file()), None)

    def _stamped(self, version: tuple[int, str]) -> Iterator[tuple[Path, dict[str, Any]]]:
        """(folder, stamp) of each saved snapshot whose stamp names ``version`` and these settings.

        A collection without a version stamp (written only with the raw Chroma API) never matches: its count alone
        cannot tell an edit in place, so its corpus is read and compared by content instead.
        """
        if not version[1] or not self.index_dir.is_dir():
            return
        settings = json.loads(json.dumps(self._settings()))  # as saved: lists, not tuples
        for folder in sorted(p for p in self.index_dir.iterdir() if p.is_dir() and not p.name.startswith(".tmp-")):
            try:
                saved = json.loads((folder / FINGERPRINT_FILE).read_text())
            except (OSError, ValueError) as exc:  # removed or half-written by another process
                log.debug("saved BM25 snapshot in %s not usable (%s)", folder, exc)
                continue
            if saved.get("version") == list(version) and all(saved.get(k) == v for k, v in settings.items()):
                yield folder, saved

    # -- Recall protocol -------------------------------------------------------------------------------
    def add_texts(
        self,
        texts: Sequence[str],
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
        ids: Sequence[str] | None = None,
    ) -> AddResult:
        """Store passages in the underlying Chroma collection; the BM25 index follows on the next search.

        Args:
            texts: The passages.
            metadatas: One metadata mapping (or ``None``) per passage.
            ids: One id per passage; default a hash of the text.

        Returns:
            How many passages were added, updated or already stored as given.

        Raises:
            InvalidDocumentError: If texts, ids or metadata cannot be stored (nothing is written).
        """
        result = self.chroma.add_texts(texts, metadatas=metadatas, ids=ids)
        self.mark_stale()  # even "unchanged" here may be new to the index when another recall wrote it first
        return result

    def delete(self, ids: Sequence[str]) -> int:
        """Delete passages from the Chroma collection; the next search no longer returns them.

        Args:
            ids: The ids to delete; ids not stored are ignored.

        Returns:
            How many of ``ids`` were stored.

        Raises:
            InvalidParameterError: If ``ids`` is not a list of strings.
        """
        deleted = self.chroma.delete(ids)
        self.mark_stale()
        return deleted

    def search(
        self,
        query: str,
        limit: int = 20,
        *,
        where: Mapping[str, Any] | None = None,
        where_document: Mapping[str, Any] | None = None,
    ) -> list[Hit]:
        """The top passages by BM25 score.

        Args:
            query: The search text.
            limit: How many hits at most.
            where: Chroma-style metadata filter.
            where_document: Chroma-style document filter.

        Returns:
            Up to ``limit`` hits, best first; only passages sharing a term with the query.

        Raises:
            InvalidQueryError: If the query is empty, blank or not a string.
            InvalidParameterError: If ``limit`` is below 1 or a filter is not a valid Chroma filter.
            CollectionNotFoundError: If the Chroma collection does not exist.
        """
        check_search_args(query, limit)
        check_filters(where, where_document)
        snap = self._current()  # everything below reads this one snapshot, whatever refreshes meanwhile
        if snap.retriever is None:
            return []
        tokens = self._tokenize_query(query)
        scores = np.asarray(snap.retriever.get_scores(tokens), dtype=np.float64)
        if where or where_document:
            with self.chroma.errors():
                allowed = set(
                    self.chroma.collection.get(
                        where=dict(where) if where else None,
                        where_document=dict(where_document) if where_document else None,
                        include=[],
                    )["ids"]
                )
            scores[[i for i, doc_id in enumerate(snap.ids) if doc_id not in allowed]] = 0.0
        candidates = np.flatnonzero(scores > 0)
        # Highest score first; ties by index position so results are deterministic.
        order = candidates[np.lexsort((candidates, -scores[candidates]))][:limit]
        return [
            self._hit(snap.ids[i], snap.texts[i], snap.metas[i], scores[i], rank)
            for rank, i in enumerate(order, start=1)
        ]

    @property
    def collection(self):
        """The Chroma collection the passages come from (raises if it does not exist)."""
        return self.chroma.collection

    def count(self) -> int:
        """How many passages the Chroma collection holds (the index follows it on the next search)."""
        return self.chroma.count()

    def __repr__(self) -> str:
        return f"BM25Recall(collection={self.chroma.name!r}, stemmer={self.stemmer_language!r})"


def metas_by(order: Sequence[str], ids: Sequence[str], metas: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Re-order metadata to follow another id order.

    Args:
        order: The ids in the wanted order (each one of ``ids``).
        ids: The ids ``metas`` are given for.
        metas: One metadata dict per id of ``ids``.

    Returns:
        The metadata dicts, one per id of ``order``.
    """
    row = {doc_id: i for i, doc_id in enumerate(ids)}
    return [metas[row[doc_id]] for doc_id in order]


def _default_index_dir(chroma: ChromaRecall) -> Path:
    if chroma.path is not None:  # an embedded database we open ourselves; asking for its client would create it
        return chroma.path / "bm25" / chroma.name
    settings = getattr(chroma.client, "get_settings", None)
    persist = settings().persist_directory if settings is not None and settings().is_persistent else None
    base = Path(persist) if persist else default_db_path()
    return base / "bm25" / chroma.name


class _Tokens:
    """Token ids added a page at a time under one vocabulary (``bm25s``'s ``Tokenizer`` keeps it across calls),
    so a corpus is tokenised without being held whole. The ids and scores equal one ``bm25s.tokenize`` call over
    the whole corpus (tests/unit/test_bm25_streamed.py)."""

    def __init__(self, stopwords: str | list[str] | None, stemmer: Any) -> None:
        import bm25s

        self._tokenizer = bm25s.tokenization.Tokenizer(stopwords=stopwords, stemmer=stemmer)
        self.ids: list[list[int]] = []

    def add(self, texts: Sequence[str]) -> None:
        """Tokenise ``texts`` and append their ids; a passage of stopwords only gets no tokens."""
        self.ids.extend(
            self._tokenizer.tokenize(
                list(texts), update_vocab=True, return_as="ids", show_progress=False, allow_empty=False
            )
        )

    @property
    def vocab(self) -> dict[str, int]:
        """Token (or stem) -> id, for the index."""
        return self._tokenizer.get_vocab_dict()


class _Fingerprint:
    """A digest of the settings and the (id, text) pairs that does not depend on their order: Chroma does not
    promise an order for ``get()``, and summing per-passage hashes lets a save hash pages as they come instead of
    holding and sorting the corpus."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self._settings = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).digest()
        self._sum = 0

    def update(self, ids: Iterable[str], texts: Iterable[str]) -> None:
        for doc_id, text in zip(ids, texts, strict=True):
            digest = hashlib.sha256(doc_id.encode("utf-8") + b"\0" + text.encode("utf-8")).digest()
            self._sum = (self._sum + int.from_bytes(digest, "big")) % (1 << 256)

    def hexdigest(self) -> str:
        return hashlib.sha256(self._settings + self._sum.to_bytes(32, "big")).hexdigest()


class _CorpusWriter:
    """Writes the corpus file (``{"texts": [...], "metadatas": [...]}``) a page at a time: texts and metadata go
    to two anonymous temporary files as they come and are copied into place at the end, so the corpus is never one
    string in memory.

    >>> with _CorpusWriter(path) as corpus:  # doctest: +SKIP
    ...     corpus.add(["a passage"], [{"source": "a.md"}])
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        parts = [tempfile.TemporaryFile("w+", encoding="utf-8", dir=path.parent) for _ in range(2)]  # noqa: SIM115
        self._parts = parts  # closed (and so deleted) by __exit__
        self._count = 0

    def add(self, texts: Iterable[str], metas: Iterable[Mapping[str, Any]]) -> None:
        """Append passages (a text and its metadata each), in row order."""
        texts_part, metas_part = self._parts
        for text, meta in zip(texts, metas, strict=True):
            comma = "," if self._count else ""
            texts_part.write(comma + json.dumps(text, ensure_ascii=False))
            metas_part.write(comma + json.dumps(dict(meta), ensure_ascii=False))
            self._count += 1

    def __enter__(self) -> _CorpusWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        try:
            if exc_type is None:
                with self.path.open("w", encoding="utf-8") as out:
                    for opening, part in zip(('{"texts": [', '], "metadatas": ['), self._parts, strict=True):
                        out.write(opening)
                        part.seek(0)
                        shutil.copyfileobj(part, out)
                    out.write("]}")
        finally:
            for part in self._parts:
                part.close()


def _restamp(corpus: Path, folder: Path, stamp: Mapping[str, Any]) -> bool:
    """Move the new ``corpus`` file into the saved index ``folder`` of the same passages, then its new stamp;
    False (nothing moved) when another process removed the folder meanwhile, so the caller saves the index anew."""
    try:
        os.replace(corpus, folder / CORPUS_FILE)
    except FileNotFoundError:
        return False
    _write_json(folder / FINGERPRINT_FILE, stamp)
    return True


def _temp_name(path: Path) -> Path:
    """A temporary name beside ``path`` that no other process or thread writing it at the same time uses."""
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")


def _write_json(path: Path, data: Any) -> None:
    """Replace ``path`` whole with ``data`` as JSON (written beside it, then renamed)."""
    tmp = _temp_name(path)
    tmp.write_text(json.dumps(data, ensure_ascii=False))
    os.replace(tmp, path)
