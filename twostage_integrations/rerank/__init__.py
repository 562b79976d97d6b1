"""Stage-2 rerankers: one module per backend, one contract (:class:`Reranker`)."""

from ..extras import lazy_attributes
from .base import BaseReranker, Reranker, apply_scores
from .cache import ScoreCache
from .cascade import Cascade
from .cross_encoder import CrossEncoderReranker
from .factory import make_reranker
from .fallback import FallbackReranker
from .fusion import FusedReranker

# Backends with optional dependencies load on first use: importing this package needs neither their SDKs nor torch.
__getattr__ = lazy_attributes(
    __name__, {"CohereReranker": ".cohere", "VoyageReranker": ".voyage", "RerankersReranker": ".rerankers"}
)

__all__ = [
    "BaseReranker",
    "Cascade",
    "CohereReranker",
    "CrossEncoderReranker",
    "FallbackReranker",
    "FusedReranker",
    "Reranker",
    "RerankersReranker",
    "ScoreCache",
    "VoyageReranker",
    "apply_scores",
    "make_reranker",
]
