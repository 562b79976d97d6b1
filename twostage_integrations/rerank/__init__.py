"""Stage-2 rerankers: one module per backend, one contract (:class:`Reranker`)."""

from .base import BaseReranker, Reranker, apply_scores
from .cache import ScoreCache
from .cascade import Cascade
from .cross_encoder import CrossEncoderReranker
from .factory import make_reranker
from .fallback import FallbackReranker
from .fusion import FusedReranker

# Loaded on first use: the rerankers library (and torch behind it) stays out of `import twostage_integrations`.
_LAZY = {"RerankersReranker": ".rerankers"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BaseReranker",
    "Cascade",
    "CrossEncoderReranker",
    "FallbackReranker",
    "FusedReranker",
    "Reranker",
    "RerankersReranker",
    "ScoreCache",
    "apply_scores",
    "make_reranker",
]
