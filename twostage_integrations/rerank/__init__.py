"""Stage-2 rerankers: one module per backend, one contract (:class:`Reranker`)."""

from .base import BaseReranker, Reranker, apply_scores
from .cross_encoder import CrossEncoderReranker
from .factory import make_reranker

__all__ = ["BaseReranker", "CrossEncoderReranker", "Reranker", "apply_scores", "make_reranker"]
