"""ONNX Runtime engine for sentence-transformers cross-encoders (``CrossEncoderReranker(backend="onnx")``).

Inference needs only ``onnxruntime``, ``tokenizers`` and numpy: nothing here imports torch or
sentence-transformers. Exporting the model to ONNX (once per model, cached) and the int8 quantisation live in
:mod:`twostage_integrations.rerank.onnx_export`; their names are re-exported here.

- ``onnx``: fp32, scores equal to sentence-transformers' within float rounding (same tokenizer settings,
  same truncation, same activation).
- ``onnx-int8``: the fp32 graph with dynamically quantised int8 weights (per-channel, classifier kept in fp32);
  faster, rankings close to fp32 but not identical. Opt-in.
- ``auto`` (the default): the faster of torch and ``onnx`` on this machine, timed once per model and cached
  (:mod:`twostage_integrations.rerank.autopick`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..config import TWOSTAGE_CACHE_DIR, TWOSTAGE_RERANK_BACKEND
from ..errors import InvalidParameterError, MissingDependencyError, ModelLoadError
from ..extras import install_line
from .engine import ACTIVATIONS, BatchedEngine, RerankStats, pair_tokenizer, token_limit  # noqa: F401 - RerankStats lived here

CACHE_ENV = TWOSTAGE_CACHE_DIR.name  # the same values as onnx_export's, without importing it
INSTALL_HINT = install_line("onnx")

# Re-exported lazily (this module's public names before the split): importing the engine reads no export code.
_EXPORT_NAMES = (
    "EXPORT_VERSION",
    "EXPORTS",
    "INT8_RECIPE",
    "OPSET",
    "WEIGHT_FILES",
    "cache_dir",
    "export_onnx",
    "onnx_model_path",
    "quantize_int8",
    "reject_cached",
    "snapshot",
)


def __getattr__(name: str) -> Any:
    if name in _EXPORT_NAMES:
        from . import onnx_export

        return getattr(onnx_export, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


AUTO = "auto"
# "auto" last: error messages list the engines first. What each name runs: docs/stage2.md, "Engines".
BACKENDS = ("torch", "onnx", "onnx-int8", AUTO)
# The engines `auto` chooses among: the exact ones (scores equal sentence-transformers' within float rounding).
# onnx-int8 is left out on purpose: int8 weights are a different quality level (rankings close to fp32, not equal),
# so only a spec, a preset or backend="onnx-int8" picks it. See rerank/autopick.py.
EXACT_BACKENDS = ("torch", "onnx")
TORCH_FREE = ("onnx",)  # exact engines that run without importing torch
BACKEND_ENV = TWOSTAGE_RERANK_BACKEND.name


# -- choosing the backend -------------------------------------------------------------------------------------
def onnx_available() -> bool:
    """True when ``onnxruntime`` and ``tokenizers`` are importable (checked without importing them)."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "tokenizers"))


def exact_engines() -> list[str]:
    """The exact engines installed, checked without importing them: ``torch`` (torch and sentence-transformers)
    and ``onnx`` (onnxruntime and tokenizers, plus the ``onnx`` exporter: chromadb installs onnxruntime for
    everyone, and an engine that then fails to export would break plain installs).

    Returns:
        A sub-list of :data:`EXACT_BACKENDS`.
    """
    found = []
    if all(importlib.util.find_spec(m) is not None for m in ("torch", "sentence_transformers")):
        found.append("torch")
    if onnx_available() and importlib.util.find_spec("onnx") is not None:
        found.append("onnx")
    return found


def resolve_backend(backend: str | None) -> str:
    """``backend``, else ``$TWOSTAGE_RERANK_BACKEND``, else ``"auto"``; ``"auto"`` stays ``"auto"`` when several
    exact engines are installed (the reranker then times them, see :mod:`.autopick`), else becomes the one
    installed (``"torch"`` when none is: its loader names what is missing).

    Args:
        backend: ``"auto"``, ``"onnx"``, ``"onnx-int8"``, ``"torch"`` (any case), or None for the default.

    Returns:
        One of :data:`BACKENDS`.

    Raises:
        InvalidParameterError: An unknown name.
        MissingDependencyError: An ONNX backend asked for without onnxruntime/tokenizers.

    >>> resolve_backend("torch")
    'torch'
    """
    chosen = backend if backend is not None else (TWOSTAGE_RERANK_BACKEND.value() or AUTO)
    if not isinstance(chosen, str) or chosen.strip().lower() not in BACKENDS:
        where = f" (from ${BACKEND_ENV})" if backend is None else ""
        raise InvalidParameterError(
            f"unknown rerank backend {chosen!r}{where}; choose one of {', '.join(BACKENDS)} "
            f"(onnx and onnx-int8 need {INSTALL_HINT})"
        )
    chosen = chosen.strip().lower()
    if chosen == AUTO:
        installed = exact_engines()
        return AUTO if len(installed) > 1 else (installed[0] if installed else "torch")
    if chosen != "torch" and not onnx_available():
        raise MissingDependencyError(
            f"rerank backend {chosen!r} needs onnxruntime and tokenizers: {INSTALL_HINT} "
            f"(or pass backend='torch' / --rerank-backend torch)"
        )
    return chosen


def physical_cores() -> int:
    """Cores this process may use, counting SMT siblings once (what ONNX Runtime's intra-op pool should get)."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        import psutil

        physical = psutil.cpu_count(logical=False) or usable
    except ImportError:  # psutil is optional; without it assume one thread per core
        physical = usable
    return max(1, min(usable, physical))


# -- model settings as sentence-transformers reads them ---------------------------------------------------------
_TORCH_ACTIVATIONS = {
    "torch.nn.modules.activation.Sigmoid": "sigmoid",
    "torch.nn.Sigmoid": "sigmoid",
    "torch.nn.modules.linear.Identity": "identity",
    "torch.nn.Identity": "identity",
    "torch.nn.modules.activation.Tanh": "tanh",
    "torch.nn.Tanh": "tanh",
}


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def read_activation(model_dir: Path) -> str:
    """The activation sentence-transformers' ``CrossEncoder`` applies: the saved one (config_sentence_transformers
    .json, then config.json), else sigmoid for 1-label models and identity otherwise."""
    config = _read_json(model_dir / "config.json")
    saved = (
        _read_json(model_dir / "config_sentence_transformers.json").get("activation_fn")
        or (config.get("sentence_transformers") or {}).get("activation_fn")
        or config.get("sbert_ce_default_activation_function")
    )
    if saved:
        if saved not in _TORCH_ACTIVATIONS:
            raise ModelLoadError(
                f"{model_dir} uses activation {saved!r}, which the ONNX engine does not implement; "
                f"use backend='torch' or pass activation='identity'/'sigmoid'"
            )
        return _TORCH_ACTIVATIONS[saved]
    return "sigmoid" if len(config.get("id2label") or {"0": 0}) == 1 else "identity"


def read_max_length(model_dir: Path) -> int:
    """The token limit sentence-transformers uses: sentence_bert_config.json's ``max_seq_length``, else the
    tokenizer's ``model_max_length``, else the position embeddings the model has."""
    config = _read_json(model_dir / "config.json")
    for value in (
        _read_json(model_dir / "sentence_bert_config.json").get("max_seq_length"),
        _read_json(model_dir / "tokenizer_config.json").get("model_max_length"),
    ):
        if isinstance(value, (int, float)) and 0 < value < 1e6:  # transformers writes 1e30 for "no limit"
            return int(value)
    return token_limit(None, config)


# -- the engine -------------------------------------------------------------------------------------------------
class OnnxCrossEncoder(BatchedEngine):
    """The ONNX Runtime engine behind ``CrossEncoderReranker(backend="onnx" | "onnx-int8")``.

    Implements :class:`~twostage_integrations.rerank.engine.CrossEncoderEngine`: ``predict`` tokenises every pair
    once, sorts the pairs by token length, runs batches of ``batch_size`` padded only to their own longest pair,
    and returns the scores in input order (see :class:`~twostage_integrations.rerank.engine.BatchedEngine`).

    Args:
        model_dir: A cross-encoder folder with ``config.json`` and ``tokenizer.json``, and either
            ``onnx/model.onnx`` or torch weights to export (once, cached).
        int8: Run the int8-quantised graph instead of fp32.
        max_length: Tokens per pair; default: the model's.
        batch_size: Pairs per forward pass.
        threads: ONNX Runtime intra-op threads; default: physical cores.
        activation: ``"sigmoid"``, ``"identity"`` or ``"tanh"``; default: the model's.

    Raises:
        InvalidParameterError: ``activation`` is not one of the names above.
        ModelLoadError: The folder has no ``tokenizer.json``, nothing to export, an activation this engine
            does not implement, or a graph ONNX Runtime cannot load (a cached export is made again once first).
    """

    def __init__(
        self,
        model_dir: str | os.PathLike[str],
        *,
        int8: bool = False,
        max_length: int | None = None,
        batch_size: int = 16,
        threads: int | None = None,
        activation: str | None = None,
    ) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.model_dir = Path(model_dir)
        self.int8 = int8
        limit = int(max_length) if max_length is not None else read_max_length(self.model_dir)
        self.activation = activation if activation is not None else read_activation(self.model_dir)
        if self.activation not in ACTIVATIONS:
            raise InvalidParameterError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
        tokenizer_file = self.model_dir / "tokenizer.json"
        if not tokenizer_file.is_file():
            raise ModelLoadError(
                f"{self.model_dir} has no tokenizer.json (a fast tokenizer), which the ONNX engine needs; "
                f"use backend='torch', or save the model again with a recent transformers"
            )
        side = _read_json(self.model_dir / "tokenizer_config.json").get("truncation_side", "right")
        tokenizer = pair_tokenizer(Tokenizer.from_file(str(tokenizer_file)), limit, side=side)
        options = ort.SessionOptions()
        # One forward at a time uses every core; concurrent callers queue on the lock below instead of
        # oversubscribing the CPU with several thread pools.
        self.threads = threads or physical_cores()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        # Memory patterns pre-plan one block per input shape; with a new shape on nearly every call they only
        # add to the peak (measured: -38 MiB peak at 8 pairs per batch, speed within noise; docs/bench.md).
        options.enable_mem_pattern = False
        self.path, self.session = self._load(ort, options)
        self._lock = threading.Lock()
        names = [i.name for i in self.session.get_inputs()]
        super().__init__(tokenizer, max_length=limit, batch_size=batch_size, input_names=names)

    def _load(self, ort: Any, options: Any) -> tuple[Path, Any]:
        """The graph's path and session. A cached export that passed its hash check but that ONNX Runtime still
        refuses (a corrupt file with a matching manifest, e.g. a copied cache) is exported again, once."""

        from .onnx_export import onnx_model_path, reject_cached

        def session(path: Path) -> Any:
            return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

        path = onnx_model_path(self.model_dir, int8=self.int8)
        try:
            return path, session(path)
        # ORT raises its own pybind classes (InvalidProtobuf, Fail, ...), all plain Exception subclasses.
        except Exception as exc:
            if not reject_cached(path, f"{type(exc).__name__}: {exc}"):
                raise ModelLoadError(f"ONNX Runtime cannot load {path}: {exc}") from exc
        path = onnx_model_path(self.model_dir, int8=self.int8)  # exports again (one WARNING line says why)
        try:
            return path, session(path)
        except Exception as exc:
            raise ModelLoadError(f"ONNX Runtime cannot load {path} even after exporting it again: {exc}") from exc

    def _forward(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        with self._lock:
            logits = self.session.run(None, feed)[0]
        return ACTIVATIONS[self.activation](logits)

    def __repr__(self) -> str:
        return f"OnnxCrossEncoder({str(self.model_dir)!r}, int8={self.int8}, max_length={self.max_length})"
