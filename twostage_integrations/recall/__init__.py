"""Stage-1 recall backends."""

from .base import AddResult, BaseRecall, DeleteNotSupportedError, Recall
from .chroma import ChromaRecall, default_db_path

__all__ = ["AddResult", "BaseRecall", "ChromaRecall", "DeleteNotSupportedError", "Recall", "default_db_path"]
