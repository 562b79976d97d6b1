"""The stage-1 contract."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ..hit import Hit


@dataclass
class AddResult:
    """What ``add_texts`` did: how many passages were new, changed, or already stored as given."""

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
    ) -> list[Hit]: ...

    async def asearch(
        self,
        query: str,
        limit: int = 20,
        *,
        where: Mapping[str, Any] | None = None,
        where_document: Mapping[str, Any] | None = None,
    ) -> list[Hit]: ...

    def add_texts(
        self,
        texts: Sequence[str],
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
        ids: Sequence[str] | None = None,
    ) -> AddResult: ...

    def count(self) -> int: ...


def query_embedder(recall: object) -> Any:
    """The :class:`~twostage_integrations.embeddings.BaseEmbedder` that embeds ``recall``'s queries (a dense
    recall's ``embedder``, a hybrid recall's dense arm's), or ``None`` for recalls that embed nothing."""
    from ..embeddings import BaseEmbedder

    for candidate in (recall, getattr(recall, "dense", None)):
        embedder = getattr(candidate, "embedder", None)
        if isinstance(embedder, BaseEmbedder):
            return embedder
    return None
