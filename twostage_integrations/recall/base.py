"""The stage-1 contract."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ..errors import DeleteNotSupportedError
from ..hit import Hit


@dataclass
class AddResult:
    """What ``add_texts`` did: how many passages were new, changed, or already stored as given.

    ``+=`` adds another result's counts and ids (for batched adds).

    Attributes:
        added: Passages whose id was not stored before.
        updated: Stored ids whose text or metadata changed.
        unchanged: Stored ids given again with the same text and metadata.
        ids: The passages' ids, in input order (content hashes where none were given).
    """

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    ids: list[str] = field(default_factory=list, repr=False)

    def __iadd__(self, other: AddResult) -> AddResult:
        self.added += other.added
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.ids.extend(other.ids)
        return self


@runtime_checkable
class Recall(Protocol):
    """Stage 1: what :class:`~twostage_integrations.TwoStagePipeline`, the adapters and evaluation call.

    - ``search``/``asearch`` return at most ``limit`` hits, best first, with ``recall_score``,
      ``recall_rank`` and ``score`` (= ``recall_score``) set. ``where``/``where_document`` are Chroma-style
      filters; every backend applies them (or raises a typed error).
    - Backend options: ``TwoStagePipeline.run(query, **options)`` forwards extra keywords to ``search``
      unchanged. They are not part of this protocol because they are backend-specific: a backend declares
      the ones it supports as keyword-only parameters (``ChromaRecall``: ``num_candidates``; ``HybridRecall``
      passes them to its dense arm) and an unknown option is a ``TypeError`` at the call, as for any Python
      function. Code that must work with any recall passes none.
    - ``add_texts`` stores passages (upsert by id); ``count`` is how many passages stage 1 holds.
    - ``score_kind`` names the scale of ``recall_score`` (``"cosine"``, ``"bm25"``, ``"rrf"``; see
      docs/scores.md). Optional: adapters read it with ``getattr(recall, "score_kind", "recall")``.
    - Dense backends expose their query embedder as ``embedder`` (a
      :class:`~twostage_integrations.embeddings.BaseEmbedder`); evaluation embeds all queries in one
      batch with ``recall.embedder.cached_queries(queries)`` before searching. Optional too.

    ``isinstance(obj, Recall)`` checks that the methods exist (not their signatures).
    """

    def search(
        self,
        query: str,
        limit: int = 20,
        *,
        where: Mapping[str, Any] | None = None,
        where_document: Mapping[str, Any] | None = None,
    ) -> list[Hit]:
        """The top ``limit`` passages for ``query``, best first.

        Args:
            query: The search text.
            limit: How many hits at most.
            where: Chroma-style metadata filter.
            where_document: Chroma-style document filter.

        Returns:
            Hits with ``score`` = ``recall_score`` and ``recall_rank`` set (1-based).
        """
        ...

    async def asearch(
        self,
        query: str,
        limit: int = 20,
        *,
        where: Mapping[str, Any] | None = None,
        where_document: Mapping[str, Any] | None = None,
    ) -> list[Hit]:
        """Async :meth:`search`, off the event loop.

        Args:
            query: The search text.
            limit: How many hits at most.
            where: Chroma-style metadata filter.
            where_document: Chroma-style document filter.

        Returns:
            What :meth:`search` returns for the same arguments.
        """
        ...

    def add_texts(
        self,
        texts: Sequence[str],
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
        ids: Sequence[str] | None = None,
    ) -> AddResult:
        """Store passages (upsert by id).

        Args:
            texts: The passages.
            metadatas: One metadata mapping (or ``None``) per passage.
            ids: One id per passage; the backend makes them when ``None``.

        Returns:
            How many passages were added, updated or already stored as given.
        """
        ...

    def count(self) -> int:
        """How many passages stage 1 holds."""
        ...


class BaseRecall(ABC):
    """What the shipped recalls share; derive from it to write a stage-1 backend.

    A subclass implements :meth:`search`, :meth:`add_texts` and :meth:`count` (and :meth:`delete` if it can
    delete) and gets the rest of the :class:`Recall` protocol: :meth:`asearch` runs :meth:`search` in a worker
    thread, and :meth:`_hit` builds the hits the protocol asks for. Backend options (``num_candidates``...) are
    keyword-only parameters of the subclass's ``search``; :meth:`asearch` passes them through.
    """

    score_kind: str = "recall"  # recall_score scale, see docs/scores.md; subclasses name theirs

    @abstractmethod
    def search(
        self,
        query: str,
        limit: int = 20,
        *,
        where: Mapping[str, Any] | None = None,
        where_document: Mapping[str, Any] | None = None,
    ) -> list[Hit]:
        """The top ``limit`` passages for ``query``, best first.

        Args:
            query: The search text.
            limit: How many hits at most.
            where: Chroma-style metadata filter.
            where_document: Chroma-style document filter.

        Returns:
            Hits with ``score`` = ``recall_score`` and ``recall_rank`` set (1-based).
        """

    async def asearch(
        self,
        query: str,
        limit: int = 20,
        *,
        where: Mapping[str, Any] | None = None,
        where_document: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> list[Hit]:
        """:meth:`search` in a worker thread (``asyncio.to_thread``), so model and database work never block
        the event loop.

        Args:
            query: The search text.
            limit: How many hits at most.
            where: Chroma-style metadata filter.
            where_document: Chroma-style document filter.
            **options: Backend options of the subclass's ``search`` (an unknown one is a ``TypeError``).

        Returns:
            What :meth:`search` returns for the same arguments.
        """
        return await asyncio.to_thread(
            self.search,
            query,
            limit,
            where=where,
            where_document=where_document,
            **options,
        )

    @abstractmethod
    def add_texts(
        self,
        texts: Sequence[str],
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
        ids: Sequence[str] | None = None,
    ) -> AddResult:
        """Store passages (upsert by id).

        Args:
            texts: The passages.
            metadatas: One metadata dict (or ``None``) per passage.
            ids: One id per passage; default a hash of the text.

        Returns:
            How many passages were added, updated or already stored as given.
        """

    @abstractmethod
    def count(self) -> int:
        """How many passages stage 1 holds."""

    def delete(self, ids: Sequence[str]) -> int:
        """Delete passages by id. This default cannot; recalls that own a store override it.

        Args:
            ids: The ids to delete; ids not stored are ignored.

        Returns:
            How many of ``ids`` were stored.

        Raises:
            DeleteNotSupportedError: Always, unless a subclass overrides this method.
        """
        raise DeleteNotSupportedError(
            f"{type(self).__name__} cannot delete passages; delete them from the store it reads "
            f"(e.g. ChromaRecall.delete)"
        )

    @staticmethod
    def _hit(doc_id: str, text: str | None, metadata: Mapping[str, Any] | None, score: float, rank: int) -> Hit:
        """One stage-1 hit: ``score`` and ``recall_score`` both ``score`` (as a float), ``recall_rank`` ``rank``;
        a missing text becomes ``""`` and the metadata is copied, so callers may change it freely."""
        score = float(score)
        return Hit(
            id=doc_id,
            text=text or "",
            metadata=dict(metadata or {}),
            score=score,
            recall_score=score,
            recall_rank=rank,
        )


def query_embedder(recall: object) -> Any:
    """The embedder that embeds ``recall``'s queries, if any.

    Args:
        recall: A stage 1; a dense recall's ``embedder`` or a hybrid recall's dense arm's is found.

    Returns:
        The :class:`~twostage_integrations.embeddings.BaseEmbedder`, or ``None`` for recalls that embed nothing.
    """
    from ..embeddings import BaseEmbedder

    for candidate in (recall, getattr(recall, "dense", None)):
        embedder = getattr(candidate, "embedder", None)
        if isinstance(embedder, BaseEmbedder):
            return embedder
    return None
