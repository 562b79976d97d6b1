"""Two-stage retrieval: recall candidates cheaply, rerank them precisely.

>>> from twostage_integrations import ChromaRecall, CrossEncoderReranker, TwoStagePipeline
"""

from .errors import (
    APIKeyError,
    CollectionNotFoundError,
    DeleteNotSupportedError,
    InvalidDocumentError,
    InvalidParameterError,
    InvalidQueryError,
    ModelLoadError,
    ModelNotFoundError,
    PipelineSpecError,
    RerankAPIError,
    TwoStageError,
)
from .extras import lazy_attributes
from .hit import Hit
from .pipeline import SearchResult, StageTimings, TwoStagePipeline
from .recall import AddResult, BaseRecall, ChromaRecall, Recall
from .rerank import (
    BaseReranker,
    Cascade,
    CrossEncoderReranker,
    FallbackReranker,
    FusedReranker,
    Reranker,
    ScoreCache,
)
from .spec import PipelineSpec

__version__ = "0.1.0"

# Backends with optional dependencies load on first use, so `import twostage_integrations` stays light
# and works without the extras installed.
__getattr__ = lazy_attributes(
    __name__,
    {
        "CohereReranker": ".rerank.cohere",
        "VoyageReranker": ".rerank.voyage",
        "RerankersReranker": ".rerank.rerankers",
        "BM25Recall": ".recall.bm25",
        "HybridRecall": ".recall.hybrid",
    },
)


__all__ = [
    "APIKeyError",
    "AddResult",
    "BaseRecall",
    "DeleteNotSupportedError",
    "PipelineSpec",
    "PipelineSpecError",
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
    "VoyageReranker",
]
