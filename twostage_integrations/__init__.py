"""Two-stage retrieval: recall candidates cheaply, rerank them precisely.

>>> from twostage_integrations import ChromaRecall, CrossEncoderReranker, TwoStagePipeline
"""

from .errors import (
    CollectionNotFoundError,
    InvalidDocumentError,
    InvalidParameterError,
    InvalidQueryError,
    ModelLoadError,
    ModelNotFoundError,
    TwoStageError,
)
from .hit import Hit
from .pipeline import SearchResult, StageTimings, TwoStagePipeline
from .recall import AddResult, ChromaRecall, Recall
from .rerank import BaseReranker, CrossEncoderReranker, Reranker

__version__ = "0.1.0"

__all__ = [
    "AddResult",
    "BaseReranker",
    "ChromaRecall",
    "CollectionNotFoundError",
    "CrossEncoderReranker",
    "Hit",
    "InvalidDocumentError",
    "InvalidParameterError",
    "InvalidQueryError",
    "ModelLoadError",
    "ModelNotFoundError",
    "Recall",
    "Reranker",
    "SearchResult",
    "StageTimings",
    "TwoStageError",
    "TwoStagePipeline",
]
