"""A reranker named now and loaded on first use (what the framework adapters hold)."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

from ..hit import Hit
from ..models import check_model_path, resolve_rerank_model
from .base import Reranker


class LazyReranker:
    """``make_reranker(model, **kwargs)`` deferred until the first ``rerank``/``arerank``/``score`` call.

    Constructing one is cheap (no weights are read), so adapters built from a model name can be created,
    copied and serialised freely. A path-like name that does not exist still fails at once with
    :class:`~twostage_integrations.ModelNotFoundError`. Loading happens once, even from several threads.

    >>> lazy = LazyReranker("path/to/cross-encoder")  # doctest: +SKIP
    >>> lazy.loaded
    False
    """

    def __init__(self, model: str | os.PathLike[str] | None = None, **kwargs: Any) -> None:
        self.name = resolve_rerank_model(model)
        check_model_path(self.name, kind="rerank")
        self._kwargs = kwargs
        self._reranker: Reranker | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._reranker is not None

    def get(self) -> Reranker:
        """The real reranker, loaded now if it was not yet."""
        if self._reranker is None:
            with self._lock:
                if self._reranker is None:
                    from .factory import make_reranker

                    self._reranker = make_reranker(self.name, **self._kwargs)
        return self._reranker

    @property
    def score_kind(self) -> str:
        return getattr(self.get(), "score_kind", "rerank")

    def rerank(self, query: str, hits: Sequence[Hit], top_k: int | None = None) -> list[Hit]:
        return self.get().rerank(query, hits, top_k)

    async def arerank(self, query: str, hits: Sequence[Hit], top_k: int | None = None) -> list[Hit]:
        return await self.get().arerank(query, hits, top_k)

    def __getstate__(self) -> dict[str, Any]:  # pickles as the name: cheap, and the copy loads on its own
        return {"name": self.name, "kwargs": self._kwargs}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.name, self._kwargs = state["name"], state["kwargs"]
        self._reranker, self._lock = None, threading.Lock()

    def __repr__(self) -> str:
        return f"LazyReranker({self.name!r}, loaded={self.loaded})"
