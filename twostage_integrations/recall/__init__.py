"""Stage-1 recall backends."""

from .base import AddResult, BaseRecall, DeleteNotSupportedError, Recall
from .chroma import ChromaRecall, default_db_path
from .factory import DEFAULT_RECALL, RECALL_KINDS, hybrid_from_chroma, persist_bm25, recall_by_kind

__all__ = [
    "DEFAULT_RECALL",
    "RECALL_KINDS",
    "AddResult",
    "BaseRecall",
    "ChromaRecall",
    "DeleteNotSupportedError",
    "Recall",
    "default_db_path",
    "hybrid_from_chroma",
    "persist_bm25",
    "recall_by_kind",
]
