"""Sentence-transformers embeddings on ONNX Runtime: the engine (:class:`OnnxEncoder`) behind
:class:`~twostage_integrations.embeddings.OnnxEmbedder`, and how ``as_embedder`` picks a backend.

Inference needs only ``onnxruntime``, ``tokenizers`` and numpy, so a query embeds without importing torch or
transformers. The model's transformer is exported to ONNX once (torch, cached like the cross-encoder's, see
:mod:`twostage_integrations.rerank.onnx_export`); the rest of the sentence-transformers pipeline is done here as
the model folder describes it (``modules.json``: Transformer, then mean or CLS Pooling, then Normalize): the same
text cleaning, truncation at ``max_seq_length``, pooling over the attention mask and L2 normalisation.

``OnnxEmbedder`` records the same ``name`` as the torch :class:`~twostage_integrations.embeddings.Embedder` for the
same model, so a collection ingested with one backend is queried with the other.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .config import TWOSTAGE_EMBEDDING_BACKEND
from .errors import InvalidParameterError, MissingDependencyError, ModelLoadError
from .models import looks_like_path, resolve_embedding_model

log = logging.getLogger(__name__)

EMBEDDING_BACKENDS = ("onnx", "torch")
BACKEND_ENV = TWOSTAGE_EMBEDDING_BACKEND.name
_ST = "sentence_transformers.models."
_TRANSFORMER, _POOLING, _NORMALIZE = f"{_ST}Transformer", f"{_ST}Pooling", f"{_ST}Normalize"
# Pooling flags of sentence-transformers' Pooling config, and the mode each one means.
_POOLING_FLAGS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
POOLING_MODES = ("mean", "cls")
# Files a hub snapshot needs besides the transformer's (the Pooling and Normalize module folders).
HUB_EXTRA = ("1_Pooling/*", "2_Normalize/*")


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


@dataclass(frozen=True)
class EmbeddingLayout:
    """What the ONNX embedder reads from a sentence-transformers folder.

    Args:
        transformer_dir: The folder of the Transformer module (``config.json``, ``tokenizer.json``, weights).
        pooling: ``"mean"`` or ``"cls"``.
        max_length: Tokens per text, special tokens included (``max_seq_length``).
        lower_case: Lower-case texts before tokenising (``do_lower_case``).
        dimension: Length of one vector.
    """

    transformer_dir: Path
    pooling: str
    max_length: int
    lower_case: bool
    dimension: int


def read_layout(model_dir: str | os.PathLike[str]) -> EmbeddingLayout:
    """Read a sentence-transformers folder (or a plain transformers folder, which sentence-transformers mean-pools).

    Args:
        model_dir: The model folder.

    Returns:
        Its layout.

    Raises:
        ModelLoadError: A module other than Transformer, Pooling and Normalize, a pooling mode other than mean or
            CLS, a default prompt, no ``tokenizer.json``, or neither weights nor ``onnx/model.onnx``: the message
            suggests ``backend="torch"``.
    """
    from .rerank.onnx import read_max_length

    root = Path(model_dir)
    modules = _read_json(root / "modules.json") or [{"type": _TRANSFORMER, "path": ""}]
    types = [m.get("type", "") for m in modules]
    others = [t for t in types if t not in (_TRANSFORMER, _POOLING, _NORMALIZE)]
    if others or types.count(_TRANSFORMER) != 1 or types[0] != _TRANSFORMER:
        raise ModelLoadError(
            f"{root} has sentence-transformers modules {types}; the ONNX embedder runs Transformer, Pooling and "
            f"Normalize only: use backend='torch' (or {BACKEND_ENV}=torch)"
        )
    pooling, dimension = _read_pooling(root, modules)
    if _read_json(root / "config_sentence_transformers.json").get("default_prompt_name"):
        raise ModelLoadError(
            f"{root} sets a default prompt, which the ONNX embedder does not add: use backend='torch' "
            f"(or {BACKEND_ENV}=torch)"
        )
    transformer_dir = root / modules[0].get("path", "")
    if not (transformer_dir / "tokenizer.json").is_file():
        raise ModelLoadError(
            f"{transformer_dir} has no tokenizer.json (a fast tokenizer), which the ONNX embedder needs: use "
            f"backend='torch' (or {BACKEND_ENV}=torch)"
        )
    config = _read_json(transformer_dir / "config.json")
    return EmbeddingLayout(
        transformer_dir=transformer_dir,
        pooling=pooling,
        max_length=read_max_length(transformer_dir),
        lower_case=bool(_read_json(transformer_dir / "sentence_bert_config.json").get("do_lower_case", False)),
        dimension=int(dimension or config.get("hidden_size") or 0),
    )


def _read_pooling(root: Path, modules: list[dict[str, Any]]) -> tuple[str, int | None]:
    """The pooling mode (mean when the folder has no Pooling module) and the dimension its config states."""
    folders = [m.get("path", "") for m in modules if m.get("type") == _POOLING]
    if not folders:
        return "mean", None
    config = _read_json(root / folders[0] / "config.json")
    modes = [mode for flag, mode in _POOLING_FLAGS.items() if config.get(flag)]
    if len(modes) != 1 or modes[0] not in POOLING_MODES:
        raise ModelLoadError(
            f"{root} pools with {'+'.join(modes) or 'no mode'}; the ONNX embedder implements "
            f"{' and '.join(POOLING_MODES)} pooling only: use backend='torch' (or {BACKEND_ENV}=torch)"
        )
    dim = config.get("word_embedding_dimension")
    return modes[0], int(dim) if isinstance(dim, int) else None


def pool(hidden: np.ndarray, mask: np.ndarray, mode: str) -> np.ndarray:
    """Pool token vectors into unit-length text vectors, as sentence-transformers' Pooling + Normalize do.

    Args:
        hidden: ``last_hidden_state``, shape ``(batch, tokens, dim)``.
        mask: The attention mask, shape ``(batch, tokens)``.
        mode: ``"mean"`` (over the real tokens) or ``"cls"`` (the first token).

    Returns:
        float32 vectors of shape ``(batch, dim)``, L2-normalised.
    """
    hidden = hidden.astype(np.float32, copy=False)
    if mode == "cls":
        vectors = hidden[:, 0]
    else:
        weights = mask.astype(np.float32)[:, :, None]
        vectors = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.clip(norms, 1e-12, None)).astype(np.float32, copy=False)


class OnnxEncoder:
    """The ONNX Runtime engine behind :class:`~twostage_integrations.embeddings.OnnxEmbedder`: tokenises texts as
    sentence-transformers does, runs the transformer graph in batches of similar length, pools and normalises.

    Args:
        model_dir: A sentence-transformers (or plain transformers) folder; see :func:`read_layout`.
        threads: ONNX Runtime intra-op threads; default: physical cores.

    Raises:
        ModelLoadError: The folder is not one this engine runs (see :func:`read_layout`), or its graph takes
            inputs other than input_ids, attention_mask and token_type_ids.
        MissingDependencyError: An export is needed and torch, transformers or onnx is missing.
    """

    def __init__(self, model_dir: str | os.PathLike[str], *, threads: int | None = None) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        from .rerank.onnx import physical_cores
        from .rerank.onnx_export import embedding_onnx_path

        self.layout = layout = read_layout(model_dir)
        self.tokenizer = Tokenizer.from_file(str(layout.transformer_dir / "tokenizer.json"))
        side = _read_json(layout.transformer_dir / "tokenizer_config.json").get("truncation_side", "right")
        self.tokenizer.enable_truncation(layout.max_length, direction=side)
        self.tokenizer.no_padding()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or physical_cores()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        options.enable_mem_pattern = False  # shapes change every call: a pre-planned block only adds to the peak
        self.path = embedding_onnx_path(layout.transformer_dir)
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        outputs = [o.name for o in self.session.get_outputs()]
        self.output = "last_hidden_state" if "last_hidden_state" in outputs else outputs[0]
        self.inputs = [i.name for i in self.session.get_inputs()]
        unknown = [n for n in self.inputs if n not in ("input_ids", "attention_mask", "token_type_ids")]
        if unknown:
            raise ModelLoadError(
                f"{self.path} takes inputs {unknown} the ONNX embedder does not supply; use backend='torch'"
            )
        self._lock = threading.Lock()

    def encode(
        self, texts: Sequence[str], *, batch_size: int = 64, progress: bool = False, desc: str = "embedding"
    ) -> np.ndarray:
        """Embed ``texts`` in batches of similar length.

        Args:
            texts: The texts.
            batch_size: Texts per forward pass.
            progress: Show a tqdm bar over texts.
            desc: The bar's label.

        Returns:
            float32 unit-length vectors, one row per text, in input order.
        """
        texts = [str(t).strip() for t in texts]  # what sentence-transformers' Transformer.tokenize does
        if self.layout.lower_case:
            texts = [t.lower() for t in texts]
        encodings = self.tokenizer.encode_batch(texts)
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
        order = np.argsort(-lengths, kind="stable")  # similar lengths share a batch: less padding
        out = np.zeros((len(texts), self.layout.dimension), dtype=np.float32)
        with tqdm(total=len(texts), desc=desc, unit="text", disable=not progress) as bar:
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                feed = _feed([encodings[i] for i in idx], int(lengths[idx].max()), self.inputs)
                with self._lock:  # one forward at a time already uses every core
                    hidden = self.session.run([self.output], feed)[0]
                vectors = pool(hidden, feed["attention_mask"], self.layout.pooling)
                if vectors.shape[1] != out.shape[1]:
                    out = np.zeros((len(texts), vectors.shape[1]), dtype=np.float32)
                out[idx] = vectors
                bar.update(len(idx))
        return out

    def __repr__(self) -> str:
        return f"OnnxEncoder({str(self.layout.transformer_dir)!r}, pooling={self.layout.pooling!r})"


def _feed(encodings: Sequence[Any], width: int, inputs: Sequence[str]) -> dict[str, np.ndarray]:
    """Right-padded model inputs (the attention mask hides the pads; pooling counts real tokens only)."""
    feed = {name: np.zeros((len(encodings), width), dtype=np.int64) for name in inputs}
    feed.setdefault("attention_mask", np.zeros((len(encodings), width), dtype=np.int64))
    for row, enc in enumerate(encodings):
        n = len(enc.ids)
        feed["input_ids"][row, :n] = enc.ids
        feed["attention_mask"][row, :n] = 1
        if "token_type_ids" in feed:
            feed["token_type_ids"][row, :n] = enc.type_ids
    return feed


# -- choosing the backend -------------------------------------------------------------------------------------------
def resolve_embedding_backend(backend: str | None, model: str | os.PathLike[str] | None = None) -> str:
    """``backend``, else ``$TWOSTAGE_EMBEDDING_BACKEND``, else ``"onnx"`` when the ``onnx`` extra is installed and
    the model's folder is one the ONNX embedder runs (checked without loading weights), else ``"torch"``.

    Args:
        backend: ``"onnx"``, ``"torch"`` or None.
        model: The embedding model (hub id or folder; None for the default), for the automatic choice.

    Returns:
        ``"onnx"`` or ``"torch"``.

    Raises:
        InvalidParameterError: An unknown backend (the message names the variable when it came from there).
        MissingDependencyError: ``"onnx"`` asked for without onnxruntime and tokenizers.

    >>> resolve_embedding_backend("torch")
    'torch'
    """
    chosen = backend if backend is not None else (TWOSTAGE_EMBEDDING_BACKEND.value() or None)
    if chosen is None:
        return "onnx" if _onnx_suits(model) else "torch"
    if not isinstance(chosen, str) or chosen.strip().lower() not in EMBEDDING_BACKENDS:
        where = f" (from ${BACKEND_ENV})" if backend is None else ""
        raise InvalidParameterError(
            f"unknown embedding backend {chosen!r}{where}; choose one of {', '.join(EMBEDDING_BACKENDS)}"
        )
    chosen = chosen.strip().lower()
    if chosen == "onnx" and not _onnx_importable():
        from .rerank.onnx_export import INSTALL_HINT

        raise MissingDependencyError(
            f"embedding backend 'onnx' needs onnxruntime and tokenizers: {INSTALL_HINT} (or use backend='torch')"
        )
    return chosen


def _onnx_importable() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "tokenizers"))


def _onnx_suits(model: str | os.PathLike[str] | None) -> bool:
    """Whether the automatic choice is ONNX: the extra installed and a local folder the embedder runs."""
    if not _onnx_importable():
        return False
    load_from, _ = resolve_embedding_model(model)
    folder = Path(load_from).expanduser()
    if not (looks_like_path(load_from) and folder.is_dir()):
        folder_or_none = _cached_snapshot(load_from)
        if folder_or_none is None:
            return False
        folder = folder_or_none
    try:
        layout = read_layout(folder)
    except (ModelLoadError, OSError, ValueError) as exc:
        log.debug("embedding model %s stays on torch: %s", load_from, exc)
        return False
    shipped = (layout.transformer_dir / "onnx" / "model.onnx").is_file()
    # Without a shipped graph the first run exports, which needs the onnx package (torch is then needed too).
    return shipped or importlib.util.find_spec("onnx") is not None


def _cached_snapshot(name: str) -> Path | None:
    """The hub model's local snapshot if it is cached (no network), else None."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, local_files_only=True))
    except Exception as exc:  # noqa: BLE001 - not cached, bad id, no huggingface_hub: the torch path decides
        log.debug("no cached snapshot of %s (%s)", name, exc)
        return None
