"""Pick a reranker from a model name, as ``--rerank-model`` does."""

from __future__ import annotations

import os

from .base import Reranker


def make_reranker(model: str | os.PathLike[str] | None = None, **kwargs) -> Reranker:
    """A reranker for ``model``: a local folder or ``org/name`` hub id selects the cross-encoder.

    ``None`` means the default cross-encoder (``TWOSTAGE_RERANK_MODEL`` or the MS MARCO MiniLM-L6 id).
    Keyword arguments go to the reranker's constructor.
    """
    from .cross_encoder import CrossEncoderReranker

    return CrossEncoderReranker(model, **kwargs)
