"""Stage-2 rerankers: one module per backend, one contract (:class:`Reranker`)."""

from .base import BaseReranker, Reranker, apply_scores
from .cache import ScoreCache
from .cascade import Cascade
from .cross_encoder import CrossEncoderReranker
from .factory import make_reranker
from .fallback import FallbackReranker
from .fusion import FusedReranker

__all__ = [
    "BaseReranker",
    "Cascade",
    "CrossEncoderReranker",
    "FallbackReranker",
    "FusedReranker",
    "Reranker",
    "ScoreCache",
    "apply_scores",
    "make_reranker",
]
