"""Stage-2 rerankers: one module per backend, one contract (:class:`Reranker`)."""

from .base import BaseReranker, Reranker, apply_scores
from .cascade import Cascade
from .cross_encoder import CrossEncoderReranker
from .factory import make_reranker
from .fusion import FusedReranker

__all__ = [
    "BaseReranker",
    "Cascade",
    "CrossEncoderReranker",
    "FusedReranker",
    "Reranker",
    "apply_scores",
    "make_reranker",
]
