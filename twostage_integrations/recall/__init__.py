"""Stage-1 recall backends."""

from .base import AddResult, Recall
from .chroma import ChromaRecall, default_db_path

__all__ = ["AddResult", "ChromaRecall", "Recall", "default_db_path"]
