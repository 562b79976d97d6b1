"""Typed errors. Each message says what went wrong and what to do about it.

All errors derive from :class:`TwoStageError`; each also derives from the built-in a caller would
naturally catch (``ValueError`` for bad values, ``TypeError`` for wrong types, ``LookupError`` for
missing things), so generic handlers keep working.
"""

from __future__ import annotations


class TwoStageError(Exception):
    """Base class of every error this package raises on purpose."""


class InvalidQueryError(TwoStageError, ValueError):
    """The query is empty, blank or not a string."""


class InvalidParameterError(TwoStageError, ValueError):
    """A numeric or option argument is out of range (``limit < 1``, ``top_k > limit``...)."""


class InvalidDocumentError(TwoStageError, TypeError):
    """Texts, ids or metadata that cannot be stored; raised before anything is written."""


class CollectionNotFoundError(TwoStageError, LookupError):
    """The Chroma collection does not exist (nothing has been ingested into it yet)."""


class ModelNotFoundError(TwoStageError, FileNotFoundError):
    """A model argument looks like a local path but nothing is there."""


class ModelLoadError(TwoStageError, RuntimeError):
    """A model could not be loaded (for a hub id: usually offline and not cached)."""


class APIKeyError(TwoStageError, ValueError):
    """A hosted reranker's API key is missing or was rejected. Messages never contain the key."""


class RerankAPIError(TwoStageError, RuntimeError):
    """A remote rerank call failed: a non-retryable answer, or retries ran out.

    Args:
        message: What failed and what to do about it.
        status_code: The HTTP status of the last answer, ``None`` when there was none (timeout, connection).
        attempts: How many calls were made.
    """

    def __init__(self, message: str, *, status_code: int | None = None, attempts: int = 1) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.attempts = attempts


class MissingDependencyError(TwoStageError, ImportError):
    """An optional dependency (an "extra") is not installed; the message gives the exact ``pip install`` line."""


class RerankScoresError(TwoStageError, RuntimeError):
    """A reranker broke the stage-2 contract: wrong number of scores, or a score that is NaN or infinite."""


class ChromaUnavailableError(TwoStageError, ConnectionError):
    """The Chroma server could not be reached or dropped the connection (the message names host:port)."""


class StorageError(TwoStageError, OSError):
    """Chroma's database could not be opened, read or written (unwritable folder, corrupted files...)."""
