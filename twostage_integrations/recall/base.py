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
    """What :class:`~twostage_integrations.TwoStagePipeline` needs from stage 1.

    ``search`` returns at most ``limit`` hits, best first, with ``recall_score``, ``recall_rank`` and
    ``score`` (= ``recall_score``) set.
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
