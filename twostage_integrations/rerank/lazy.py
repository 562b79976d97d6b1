"""A reranker named now and loaded on first use (what the framework adapters hold)."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

from ..errors import InvalidParameterError
from ..hit import Hit
from ..models import check_model_path, resolve_rerank_model
from .base import Reranker
from .factory import make_reranker
from .registry import model_folder


class LazyReranker:
    """``make_reranker(model, **kwargs)`` deferred until the first ``rerank``/``arerank``/``score_kind`` use.

    Constructing one is cheap (no weights are read), so adapters built from a model name can be created,
    copied and serialised freely (a pickled copy is the name and loads on its own). Loading happens once, even
    from several threads.

    Args:
        model: A model name or folder, as ``make_reranker`` takes; ``None``: ``TWOSTAGE_RERANK_MODEL``, else the
            default cross-encoder.
        **kwargs: ``make_reranker``'s keywords (``backend``, constructor arguments).

    Raises:
        ModelNotFoundError: At once, if a path-like name does not exist.

    >>> lazy = LazyReranker("path/to/cross-encoder")  # doctest: +SKIP
    >>> lazy.loaded  # doctest: +SKIP
    False
    """

    def __init__(self, model: str | os.PathLike[str] | None = None, **kwargs: Any) -> None:
        self.name = resolve_rerank_model(model)
        check_model_path(model_folder(self.name), kind="rerank")  # e.g. the folder inside a rerankers: spec
        self._kwargs = kwargs
        self._reranker: Reranker | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        """Whether the model has been loaded."""
        return self._reranker is not None

    def get(self) -> Reranker:
        """The real reranker, loaded now if it was not yet.

        Returns:
            What ``make_reranker`` built.

        Raises:
            ModelLoadError: If the model cannot be loaded.
        """
        if self._reranker is None:
            with self._lock:
                if self._reranker is None:
                    self._reranker = make_reranker(self.name, **self._kwargs)
        return self._reranker

    @property
    def score_kind(self) -> str:
        """The real reranker's score kind (loads it)."""
        return getattr(self.get(), "score_kind", "rerank")

    def rerank(self, query: str, hits: Sequence[Hit], top_k: int | None = None) -> list[Hit]:
        """Load the model if needed, then rerank with it.

        Args:
            query: The query text.
            hits: Stage 1's hits.
            top_k: How many to keep; ``None`` keeps all.

        Returns:
            The real reranker's hits, best first.
        """
        return self.get().rerank(query, hits, top_k)

    async def arerank(self, query: str, hits: Sequence[Hit], top_k: int | None = None) -> list[Hit]:
        """Async :meth:`rerank` (loading, if needed, happens in the calling thread).

        Args:
            query: The query text.
            hits: Stage 1's hits.
            top_k: How many to keep; ``None`` keeps all.

        Returns:
            The real reranker's hits, best first.
        """
        return await self.get().arerank(query, hits, top_k)

    def __getstate__(self) -> dict[str, Any]:  # pickles as the name: cheap, and the copy loads on its own
        return {"name": self.name, "kwargs": self._kwargs}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.name, self._kwargs = state["name"], state["kwargs"]
        self._reranker, self._lock = None, threading.Lock()

    def __repr__(self) -> str:
        return f"LazyReranker({self.name!r}, loaded={self.loaded})"


def as_reranker(
    reranker: Reranker | str | os.PathLike[str] | None = None, *, model: str | os.PathLike[str] | None = None
) -> Reranker:
    """What the framework adapters take as their reranker.

    Args:
        reranker: A reranker, or a model name/folder.
        model: A model name/folder (the field name LangChain's and LlamaIndex's own rerankers use).

    Returns:
        ``reranker`` when it is a reranker, else a :class:`LazyReranker` for the name (``None`` for both: the
        default reranker, as ``--rerank-model``).

    Raises:
        InvalidParameterError: If ``reranker`` and ``model`` name two different models.
        ModelNotFoundError: If a path-like name does not exist.
    """
    if isinstance(reranker, (str, os.PathLike)):
        if model is not None and str(model) != str(reranker):
            raise InvalidParameterError(f"got reranker={str(reranker)!r} and model={str(model)!r}; pass one")
        reranker, model = None, reranker
    elif reranker is not None and model is not None and str(model) != reranker.name:
        raise InvalidParameterError(f"got a reranker named {reranker.name!r} and model={str(model)!r}; pass one")
    if reranker is not None:
        return reranker
    # Named now (a missing folder fails here with the core's typed error), loaded on first use.
    return default_reranker() if model is None else LazyReranker(model)


def default_reranker(*, top_k: int | None = None) -> Reranker:
    """What runs when nothing names stage 2: the default preset's stages (``twostage query`` without options),
    each named now and loaded on first use; one stage is a :class:`LazyReranker`, several a
    :class:`~twostage_integrations.Cascade` of them.

    Args:
        top_k: Hits the caller keeps: a prefilter keeping fewer keeps this many instead.

    >>> default_reranker()  # doctest: +SKIP
    LazyReranker('cross-encoder/ms-marco-MiniLM-L-6-v2', loaded=False)
    """
    from ..spec import default_stages
    from .cascade import as_cascade

    stages = [(LazyReranker(s.model, **s.options), s.keep) for s in default_stages(top_k=top_k)]
    return stages[0][0] if len(stages) == 1 and stages[0][1] is None else as_cascade(stages)


def model_field(reranker: Reranker, *, named: bool) -> str | None:
    """The adapters' serialisable ``model`` field for the reranker they hold.

    Args:
        reranker: What :func:`as_reranker` returned.
        named: Whether the caller named a reranker or model (False: the default was built).

    Returns:
        ``reranker.name``; ``None`` for a default that is several stages (a cascade's name is not a model
        name: stored as ``None``, a dumped adapter rebuilds the same default).
    """
    return None if not named and not isinstance(reranker, LazyReranker) else reranker.name


def loaded(reranker: Reranker) -> Reranker:
    """The reranker doing the work.

    Args:
        reranker: Any reranker.

    Returns:
        A :class:`LazyReranker`'s model, loaded now if it was not yet; any other reranker as is.
    """
    return reranker.get() if isinstance(reranker, LazyReranker) else reranker
