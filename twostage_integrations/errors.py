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
    """A numeric or option argument is out of range (``limit < 1``, ``top_k > limit``...).

    Args:
        message: what is wrong and what to pass instead.
        parameter: the Python parameter the message starts with (``"top_k"``), when it names one; the CLI then
            names the option the user typed instead (``--top-k``).
    """

    def __init__(self, message: str, *, parameter: str | None = None) -> None:
        super().__init__(message)
        self.parameter = parameter


class InvalidDocumentError(TwoStageError, TypeError):
    """Texts, ids or metadata that cannot be stored; raised before anything is written."""


class CollectionNotFoundError(TwoStageError, LookupError):
    """The Chroma collection does not exist (nothing has been ingested into it yet)."""


class DatabaseNotFoundError(CollectionNotFoundError):
    """A read found no embedded Chroma database in the folder (so no collection either); nothing was created there."""


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


class PipelineSpecError(InvalidParameterError):
    """A pipeline spec (string, dict, TOML or preset name) that cannot be read.

    The message is one line: what is wrong, the bad token, and a valid example (see docs/pipeline_spec.md).

    Args:
        problem: What is wrong, with where it is (``stage 'ce:0': keep must be a whole number >= 1``).
        token: The bad token or value, shown with ``repr``.
        example: A valid spelling of what was meant.
    """

    def __init__(self, problem: str, token: object, example: str) -> None:
        super().__init__(f"{problem}, got {token!r}; e.g. {example}")
        self.problem, self.token, self.example = problem, token, example

    def __reduce__(self) -> tuple[type[PipelineSpecError], tuple[str, object, str]]:
        # Exception pickling replays __init__ with self.args (the whole message); replay the three parts instead.
        return type(self), (self.problem, self.token, self.example)


class ServerBindError(TwoStageError, OSError):
    """``twostage serve`` cannot listen on its host:port (in use, not allowed, not an address of this machine);
    raised before any model loads, and the message names host:port and the option to change."""


class DeleteNotSupportedError(TwoStageError, NotImplementedError):
    """The recall cannot delete passages (it has no store of its own to delete from)."""
