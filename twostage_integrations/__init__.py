"""Two-stage retrieval: recall candidates cheaply, rerank them precisely.

>>> from twostage_integrations import ChromaRecall, CrossEncoderReranker, TwoStagePipeline
"""

from .errors import (
    APIKeyError,
    CollectionNotFoundError,
    InvalidDocumentError,
    InvalidParameterError,
    InvalidQueryError,
    ModelLoadError,
    ModelNotFoundError,
    RerankAPIError,
    TwoStageError,
)
from .hit import Hit
from .pipeline import SearchResult, StageTimings, TwoStagePipeline
from .recall import AddResult, ChromaRecall, Recall
from .rerank import (
    BaseReranker,
    Cascade,
    CrossEncoderReranker,
    FallbackReranker,
    FusedReranker,
    Reranker,
    ScoreCache,
)

__version__ = "0.1.0"

# Backends with optional dependencies load on first use, so `import twostage_integrations` stays light
# and works without the extras installed.
_LAZY = {
    "CohereReranker": ".rerank.cohere",
    "RerankersReranker": ".rerank.rerankers",
    "BM25Recall": ".recall.bm25",
    "HybridRecall": ".recall.hybrid",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "APIKeyError",
    "AddResult",
    "BM25Recall",
    "CohereReranker",
    "HybridRecall",
    "BaseReranker",
    "Cascade",
    "ChromaRecall",
    "CollectionNotFoundError",
    "CrossEncoderReranker",
    "FallbackReranker",
    "FusedReranker",
    "ScoreCache",
    "Hit",
    "InvalidDocumentError",
    "InvalidParameterError",
    "InvalidQueryError",
    "ModelLoadError",
    "ModelNotFoundError",
    "Recall",
    "RerankAPIError",
    "Reranker",
    "RerankersReranker",
    "SearchResult",
    "StageTimings",
    "TwoStageError",
    "TwoStagePipeline",
]
