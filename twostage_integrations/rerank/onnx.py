"""ONNX Runtime engine for sentence-transformers cross-encoders (``CrossEncoderReranker(backend="onnx")``).

Inference needs only ``onnxruntime``, ``tokenizers`` and numpy: nothing here imports torch or
sentence-transformers, except :func:`export_onnx`, which runs once per model and caches its ``.onnx`` file.

- ``onnx``: fp32, scores equal to sentence-transformers' within float rounding (same tokenizer settings,
  same truncation, same activation).
- ``onnx-int8``: the fp32 graph with dynamically quantised int8 weights (per-channel, classifier kept in fp32);
  faster, rankings close to fp32 but not identical. Opt-in.

Where the files go: ``$TWOSTAGE_CACHE_DIR/onnx``, else the user cache dir (``~/.cache/twostage/onnx`` on
Linux), one file per (model content, settings) key, written to a temporary name and renamed, so a
concurrent process never reads half a file. A model folder that ships ``onnx/model.onnx`` (hub cross-encoders
do) is used as is.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from ..config import TWOSTAGE_CACHE_DIR, TWOSTAGE_RERANK_BACKEND, XDG_CACHE_HOME
from ..errors import InvalidParameterError, MissingDependencyError, ModelLoadError
from ..extras import install_line

logger = logging.getLogger(__name__)

BACKENDS = ("torch", "onnx", "onnx-int8")
BACKEND_ENV = TWOSTAGE_RERANK_BACKEND.name
CACHE_ENV = TWOSTAGE_CACHE_DIR.name
INSTALL_HINT = install_line("onnx")
OPSET = 17
# Bump when the export or quantisation recipe changes: the cache key includes it, so old files are not reused.
EXPORT_VERSION = 1
# int8 recipe, picked on SciFact train pairs (docs/bench.md): per-channel weight scales keep ranking far
# better than per-tensor ones; the 1-logit classifier is tiny and stays fp32 (its rounding moves every score).
INT8_RECIPE: dict[str, Any] = {"per_channel": True, "op_types": ["MatMul"], "exclude": ["classifier"]}
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# Files a hub snapshot needs for this engine (no torch weights when the repo ships onnx/model.onnx).
_HUB_FILES = [
    "config.json",
    "config_sentence_transformers.json",
    "sentence_bert_config.json",
    "modules.json",
    "tokenizer*",
    "special_tokens_map.json",
    "vocab.txt",
]

# Every export this process made (a test reads it to prove the second load reused the cache).
EXPORTS: list[Path] = []
_export_lock = threading.Lock()


# -- choosing the backend -------------------------------------------------------------------------------------
def onnx_available() -> bool:
    """True when ``onnxruntime`` and ``tokenizers`` are importable (checked without importing them)."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "tokenizers"))


def resolve_backend(backend: str | None) -> str:
    """``backend``, else ``$TWOSTAGE_RERANK_BACKEND``, else ``"onnx"`` when the ``onnx`` extra is installed (same
    rankings as torch and faster, see docs/bench.md), else ``"torch"``.

    The default asks for ``onnx`` (the exporter's dependency) too, not just onnxruntime: chromadb installs
    onnxruntime for everyone, and a default that then fails to export would break plain installs.

    >>> resolve_backend("torch")
    'torch'
    """
    chosen = backend if backend is not None else (TWOSTAGE_RERANK_BACKEND.value() or None)
    if chosen is None:
        return "onnx" if onnx_available() and importlib.util.find_spec("onnx") is not None else "torch"
    if not isinstance(chosen, str) or chosen.strip().lower() not in BACKENDS:
        where = f" (from ${BACKEND_ENV})" if backend is None else ""
        raise InvalidParameterError(
            f"unknown rerank backend {chosen!r}{where}; choose one of {', '.join(BACKENDS)} "
            f"(onnx and onnx-int8 need {INSTALL_HINT})"
        )
    chosen = chosen.strip().lower()
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


# -- files and cache ------------------------------------------------------------------------------------------
def cache_dir() -> Path:
    """``$TWOSTAGE_CACHE_DIR/onnx``, else the platform's user cache dir (``~/.cache/twostage/onnx``)."""
    root = TWOSTAGE_CACHE_DIR.value()
    if root:
        return Path(root).expanduser() / "onnx"
    try:
        from platformdirs import user_cache_dir

        return Path(user_cache_dir("twostage")) / "onnx"
    except ImportError:  # platformdirs is usually present (pip, chromadb pull it); XDG otherwise
        return Path(XDG_CACHE_HOME.value() or Path.home() / ".cache") / "twostage" / "onnx"


def snapshot(name: str, local_only: bool) -> Path:
    """The model folder: ``name`` itself if it is a folder, else a hub snapshot (config, tokenizer, and
    ``onnx/model.onnx`` or the torch weights). Raises OSError/ValueError like transformers would, so
    :func:`~twostage_integrations.models.load_model` turns them into one clear error."""
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(f"{path} has no config.json, so it is not a transformers model folder")
        return path
    from huggingface_hub import snapshot_download

    # Configs, tokenizer and the shipped ONNX graph if there is one; the torch weights only when there is not.
    folder = Path(snapshot_download(name, local_files_only=local_only, allow_patterns=[*_HUB_FILES, "onnx/model.onnx"]))
    if not (folder / "onnx" / "model.onnx").is_file():
        folder = Path(snapshot_download(name, local_files_only=local_only, allow_patterns=[*_HUB_FILES, *WEIGHT_FILES]))
    return folder


def _hash_files(paths: Sequence[Path], extra: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(extra, sort_keys=True).encode())
    for p in paths:
        digest.update(p.name.encode() + b"\0")
        with open(p, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()[:20]


def _pkg(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def onnx_model_path(model_dir: Path, *, int8: bool) -> Path:
    """The fp32 (``int8=False``) or int8 ``.onnx`` for ``model_dir``: the folder's own ``onnx/model.onnx`` if it
    ships one, else a cached export (made now if missing); int8 is always a cached quantisation of the fp32 file.
    """
    shipped = model_dir / "onnx" / "model.onnx"
    if shipped.is_file():
        fp32, fp32_key = shipped, _hash_files([shipped], {"shipped": True})
    else:
        weights = [model_dir / f for f in WEIGHT_FILES if (model_dir / f).is_file()]
        if not weights:
            raise ModelLoadError(
                f"{model_dir} has neither onnx/model.onnx nor torch weights ({', '.join(WEIGHT_FILES)}); "
                f"point the model argument at a full cross-encoder folder"
            )
        # The exporter's torch/transformers versions are recorded in the manifest, not the key: the graph means
        # the same across versions (tests check scores against torch), and a torch-free install can then use an
        # export made earlier. EXPORT_VERSION is bumped when our export recipe changes.
        settings: dict[str, Any] = {"opset": OPSET, "export": EXPORT_VERSION}
        fp32_key = _hash_files([model_dir / "config.json", *weights], settings)
        fp32 = cache_dir() / f"{fp32_key}.onnx"
        if not fp32.is_file():
            _build(fp32, lambda tmp: export_onnx(model_dir, tmp), f"exporting {model_dir} to ONNX", settings)
    if not int8:
        return fp32
    # Quantisation output depends on onnxruntime's quantiser, so its version is part of this key.
    settings = {
        "from": fp32_key,
        "recipe": INT8_RECIPE,
        "onnxruntime": _pkg("onnxruntime"),
        "v": EXPORT_VERSION,
    }
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:20]
    out = cache_dir() / f"{key}-int8.onnx"
    if not out.is_file():
        _build(out, lambda tmp: quantize_int8(fp32, tmp), f"quantising {fp32.name} to int8", settings)
    return out


def _build(target: Path, make, what: str, settings: dict[str, Any]) -> None:
    """Run ``make(tmp_path)`` and rename the result to ``target`` (atomic on one filesystem)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with _export_lock:  # threads of one process export once; other processes at worst export in parallel
        if target.is_file():
            return
        print(f"twostage: {what} (once; cached at {target})", file=sys.stderr)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=target.stem + ".", suffix=".tmp")
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            t0 = time.perf_counter()
            make(tmp)
            manifest = {**settings, "seconds": round(time.perf_counter() - t0, 1)}
            for pkg in ("torch", "transformers", "onnx", "onnxruntime"):
                manifest[pkg] = _pkg(pkg)
            target.with_suffix(".json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
            os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache is as readable as any downloaded model
            os.replace(tmp, target)
            EXPORTS.append(target)
        finally:
            tmp.unlink(missing_ok=True)


def export_onnx(model_dir: str | os.PathLike[str], out: str | os.PathLike[str], *, opset: int = OPSET) -> Path:
    """Export a sequence-classification cross-encoder to ONNX (fp32, dynamic batch and sequence axes).

    Needs torch, transformers and onnx (the ``onnx`` extra); the only function here that imports torch.
    """
    try:
        import onnx  # noqa: F401 - torch's exporter needs it; fail here with the install line instead
        import torch
        from transformers import AutoConfig, AutoModelForSequenceClassification
    except ImportError as exc:
        raise MissingDependencyError(
            f"exporting a cross-encoder to ONNX needs torch, transformers and onnx ({exc.name} is missing): "
            f"{INSTALL_HINT}, or use a model folder that ships onnx/model.onnx"
        ) from exc
    model_dir = Path(model_dir)
    _check_single_module(model_dir)
    config = AutoConfig.from_pretrained(model_dir)
    # Eager attention exports to plain MatMul/Softmax, which ONNX Runtime's optimiser fuses well.
    from ..models import hidden_progress_bars

    with hidden_progress_bars():  # transformers' "Loading weights" bar; see models.load_model
        model = AutoModelForSequenceClassification.from_pretrained(model_dir, attn_implementation="eager").eval()
    names = ["input_ids", "attention_mask"]
    if getattr(config, "type_vocab_size", 0) > 1:  # BERT-style segment ids; RoBERTa-style models have one type
        names.append("token_type_ids")

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, *inputs):
            return self.inner(**dict(zip(names, inputs, strict=True))).logits

    dummy = tuple(torch.ones(2, 8, dtype=torch.long) if n != "token_type_ids" else torch.zeros(2, 8, dtype=torch.long)
                  for n in names)  # fmt: skip
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["logits"] = {0: "batch"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer and deprecation chatter about the legacy exporter
        torch.onnx.export(
            Logits().eval(),
            dummy,
            str(out),
            input_names=names,
            output_names=["logits"],
            dynamic_axes=axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,  # the TorchScript exporter: no onnxscript dependency, proven on BERT-style encoders
        )
    return Path(out)


def _check_single_module(model_dir: Path) -> None:
    modules = model_dir / "modules.json"
    if modules.is_file():
        entries = json.loads(modules.read_text(encoding="utf-8"))
        if len(entries) > 1:
            raise ModelLoadError(
                f"{model_dir} is a cross-encoder with {len(entries)} sentence-transformers modules; the ONNX "
                f"engine exports single-transformer models only: use backend='torch'"
            )


def quantize_int8(src: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Dynamic int8 quantisation of an fp32 cross-encoder graph with :data:`INT8_RECIPE`."""
    try:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise MissingDependencyError(f"int8 quantisation needs onnx and onnxruntime: {INSTALL_HINT}") from exc
    graph = onnx.load(str(src), load_external_data=False)
    exclude = [n.name for n in graph.graph.node if any(part in n.name for part in INT8_RECIPE["exclude"])]
    del graph
    # The quantiser logs "consider pre-processing" through the root logger; with no handler there, that call
    # would install one (logging.basicConfig) in the user's process. Hold a silent handler while it runs.
    root, quiet = logging.getLogger(), logging.NullHandler()
    root.addHandler(quiet)
    was_disabled, root.disabled = root.disabled, True
    try:
        quantize_dynamic(
            str(src),
            str(out),
            weight_type=QuantType.QInt8,
            per_channel=INT8_RECIPE["per_channel"],
            op_types_to_quantize=INT8_RECIPE["op_types"],
            nodes_to_exclude=exclude,
        )
    finally:
        root.disabled = was_disabled
        root.removeHandler(quiet)
    return Path(out)


# -- model settings as sentence-transformers reads them ---------------------------------------------------------
ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "identity": lambda x: x,
    "tanh": np.tanh,
}
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
    positions = int(config.get("max_position_embeddings") or 512)
    if config.get("model_type") in ("roberta", "xlm-roberta", "camembert"):
        positions -= 2  # position ids start after the padding index
    for value in (
        _read_json(model_dir / "sentence_bert_config.json").get("max_seq_length"),
        _read_json(model_dir / "tokenizer_config.json").get("model_max_length"),
    ):
        if isinstance(value, (int, float)) and 0 < value < 1e6:  # transformers writes 1e30 for "no limit"
            return int(value)
    return positions


# -- the engine -------------------------------------------------------------------------------------------------
@dataclass
class RerankStats:
    """What one ``predict`` call did: pairs scored, pairs cut at ``max_length``, forward passes, real (unpadded)
    and padded tokens, seconds."""

    pairs: int = 0
    truncated: int = 0
    batches: int = 0
    tokens: int = 0
    padded_tokens: int = 0
    seconds: float = 0.0

    def add(self, other: RerankStats) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


class OnnxCrossEncoder:
    """The ONNX Runtime engine behind ``CrossEncoderReranker(backend="onnx" | "onnx-int8")``.

    ``predict`` tokenises every pair once, sorts the pairs by token length, runs batches of ``batch_size``
    padded only to their own longest pair, and returns the scores in input order.
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
        self.max_seq_length = int(max_length) if max_length is not None else read_max_length(self.model_dir)
        self.activation = activation if activation is not None else read_activation(self.model_dir)
        if self.activation not in ACTIVATIONS:
            raise InvalidParameterError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
        self.batch_size = batch_size
        tokenizer_file = self.model_dir / "tokenizer.json"
        if not tokenizer_file.is_file():
            raise ModelLoadError(
                f"{self.model_dir} has no tokenizer.json (a fast tokenizer), which the ONNX engine needs; "
                f"use backend='torch', or save the model again with a recent transformers"
            )
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        side = _read_json(self.model_dir / "tokenizer_config.json").get("truncation_side", "right")
        # What transformers does for ST's `truncation="longest_first"`: trim the longer of query and text first.
        self.tokenizer.enable_truncation(self.max_seq_length, strategy="longest_first", direction=side)
        self.tokenizer.no_padding()
        self.path = onnx_model_path(self.model_dir, int8=int8)
        options = ort.SessionOptions()
        # One forward at a time uses every core; concurrent callers queue on the lock below instead of
        # oversubscribing the CPU with several thread pools.
        self.threads = threads or physical_cores()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self._lock = threading.Lock()
        self.last_stats = RerankStats()
        self.total_stats = RerankStats()
        self._warned = False

    def predict(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """Scores (after the activation) of ``pairs``, shape ``(len(pairs), num_labels)``, in input order."""
        t0 = time.perf_counter()
        stats = RerankStats(pairs=len(pairs))
        encodings = self.tokenizer.encode_batch([(q, t) for q, t in pairs])
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
        stats.truncated = sum(1 for e in encodings if e.overflowing)
        stats.tokens = int(lengths.sum())
        order = np.argsort(-lengths, kind="stable")  # longest first: similar lengths share a batch
        out: np.ndarray | None = None
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            width = int(lengths[idx].max())
            feed = {name: np.zeros((len(idx), width), dtype=np.int64) for name in self.input_names}
            for row, i in enumerate(idx):
                enc, n = encodings[i], lengths[i]
                feed["input_ids"][row, :n] = enc.ids
                feed["attention_mask"][row, :n] = 1
                if "token_type_ids" in feed:
                    feed["token_type_ids"][row, :n] = enc.type_ids
            with self._lock:
                logits = self.session.run(None, feed)[0]
            if out is None:
                out = np.empty((len(pairs), logits.shape[1]), dtype=np.float32)
            out[idx] = logits
            stats.batches += 1
            stats.padded_tokens += len(idx) * width
        scores = ACTIVATIONS[self.activation](out) if out is not None else np.empty((0, 1), dtype=np.float32)
        stats.seconds = time.perf_counter() - t0
        self.last_stats = stats
        self.total_stats.add(stats)
        self._report_truncation(stats)
        return scores

    def _report_truncation(self, stats: RerankStats) -> None:
        if not stats.truncated:
            return
        # Warn the first time only: on corpora of long passages every call truncates, and a warning per query
        # would drown the output. The counts stay in last_stats/total_stats for bench and eval to print.
        log = logger.debug if self._warned else logger.warning
        self._warned = True
        log(
            "%d of %d (query, text) pairs were longer than max_length=%d tokens and were cut (their ends are not "
            "scored); pass max_length=... to change the limit",
            stats.truncated,
            stats.pairs,
            self.max_seq_length,
        )

    def __repr__(self) -> str:
        return f"OnnxCrossEncoder({str(self.model_dir)!r}, int8={self.int8}, max_length={self.max_seq_length})"
