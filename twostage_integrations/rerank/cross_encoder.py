"""Stage 2 with a local sentence-transformers cross-encoder, run by torch or by ONNX Runtime."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..models import RERANK_MODEL_ENV, load_model, resolve_rerank_model
from ..scores import cross_encoder_score_kind
from ..validation import check_positive_int
from .base import BaseReranker
from .onnx import ACTIVATIONS, RerankStats, resolve_backend

NO_MODEL_HINT = ", pass --rerank-model PATH, or skip stage 2 with --no-rerank"
# Pairs per forward pass when not given: sentence-transformers' default for torch; for ONNX Runtime the best
# of 8/16/32 on 2 cores with length-sorted pairs (docs/bench.md).
DEFAULT_BATCH_SIZE = {"torch": 32, "onnx": 16, "onnx-int8": 16}


class _TorchEngine:
    """sentence-transformers' ``CrossEncoder.predict`` (it sorts pairs by length itself)."""

    def __init__(
        self, name: str, *, batch_size: int, max_length: int | None, device: str | None, activation: str | None
    ) -> None:
        from sentence_transformers import CrossEncoder

        self.batch_size = batch_size
        kwargs: dict[str, Any] = {}
        if activation is not None:
            import torch

            kwargs["activation_fn"] = {"sigmoid": torch.nn.Sigmoid, "identity": torch.nn.Identity}.get(
                activation, torch.nn.Tanh
            )()
        self.model = load_model(
            name,
            lambda n, local_only: CrossEncoder(
                n, max_length=max_length, device=device, local_files_only=local_only, **kwargs
            ),
            kind="rerank",
            env_var=RERANK_MODEL_ENV,
            hint=NO_MODEL_HINT,
        )
        self.max_seq_length = self.model.max_seq_length
        self.last_stats = RerankStats()
        self.total_stats = RerankStats()

    def predict(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        t0 = time.perf_counter()
        scores = self.model.predict(
            [tuple(p) for p in pairs], batch_size=self.batch_size, show_progress_bar=False, convert_to_numpy=True
        )
        # sentence-transformers does not report truncation; count it with its own tokenizer (cheap next to a
        # forward pass) so bench and eval can print the same number for every backend.
        tok = self.model.tokenizer([p[0] for p in pairs], [p[1] for p in pairs], truncation=False, verbose=False)[
            "input_ids"
        ]
        truncated = sum(len(ids) > self.max_seq_length for ids in tok)
        tokens = sum(min(len(ids), self.max_seq_length) for ids in tok)
        self.last_stats = RerankStats(
            pairs=len(pairs), truncated=truncated, tokens=tokens, seconds=time.perf_counter() - t0
        )
        self.total_stats.add(self.last_stats)
        return scores.reshape(len(pairs), -1)


class CrossEncoderReranker(BaseReranker):
    """Score every (query, passage) pair with a cross-encoder and keep the best.

    ``model``: hub id or local folder. Default ``cross-encoder/ms-marco-MiniLM-L-6-v2``, overridden by
    the ``TWOSTAGE_RERANK_MODEL`` environment variable (useful offline: point it at a model folder).
    ``backend``: what runs the model.

    - ``"onnx"``: ONNX Runtime, fp32. Same scores as torch (within 1e-4) and faster on CPU; the model is
      exported once on first use and cached (``$TWOSTAGE_CACHE_DIR``, else ``~/.cache/twostage/onnx``).
      Needs ``pip install "twostage-integrations[onnx]"``; runs without importing torch.
    - ``"onnx-int8"``: ONNX Runtime with int8 weights: faster again, rankings close to fp32 but not identical.
    - ``"torch"``: sentence-transformers' ``CrossEncoder`` (GPU via ``device``).
    - ``None``: ``$TWOSTAGE_RERANK_BACKEND``, else ``"onnx"`` when the ``onnx`` extra is installed, else ``"torch"``.

    ``batch_size``: pairs per forward pass (default 32 for torch, 16 for ONNX). ``max_length``: token limit
    per pair (default: the model's). ``device``: torch only. ``threads``: ONNX Runtime intra-op threads
    (default: physical cores). ``activation``: ``"sigmoid"`` or ``"identity"`` instead of the model's own.

    Scores are the model's output after its configured activation (sigmoid models give 0..1).
    ``last_stats`` / ``total_stats`` count pairs, pairs cut at ``max_length`` and time; the first call that
    cuts pairs logs one warning.

    >>> from twostage_integrations import CrossEncoderReranker, Hit
    >>> ce = CrossEncoderReranker("path/to/cross-encoder", backend="onnx")  # doctest: +SKIP
    >>> hits = [Hit(id="1", text="Paris is in France."), Hit(id="2", text="Bananas are yellow.")]
    >>> [h.id for h in ce.rerank("capital of France", hits, top_k=1)]  # doctest: +SKIP
    ['1']
    """

    score_kind = property(cross_encoder_score_kind)  # ce_sigmoid / ce_logit from the activation; docs/scores.md

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        backend: str | None = None,
        batch_size: int | None = None,
        max_length: int | None = None,
        device: str | None = None,
        threads: int | None = None,
        activation: str | None = None,
    ) -> None:
        from ..errors import InvalidParameterError

        self.backend = resolve_backend(backend)
        self.name = resolve_rerank_model(model)
        self.batch_size = DEFAULT_BATCH_SIZE[self.backend] if batch_size is None else batch_size
        check_positive_int(self.batch_size, "batch_size")
        if max_length is not None:
            check_positive_int(max_length, "max_length")
        if threads is not None:
            check_positive_int(threads, "threads")
        if activation is not None and activation not in ACTIVATIONS:
            raise InvalidParameterError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
        if self.backend == "torch":
            self.engine: Any = _TorchEngine(
                self.name, batch_size=self.batch_size, max_length=max_length, device=device, activation=activation
            )
        else:
            if device not in (None, "cpu"):
                raise InvalidParameterError(f"device={device!r} needs backend='torch'; the ONNX engine runs on the CPU")
            from .onnx import OnnxCrossEncoder, snapshot

            folder = load_model(self.name, snapshot, kind="rerank", env_var=RERANK_MODEL_ENV, hint=NO_MODEL_HINT)
            self.engine = OnnxCrossEncoder(
                folder,
                int8=self.backend == "onnx-int8",
                max_length=max_length,
                batch_size=self.batch_size,
                threads=threads,
                activation=activation,
            )
        self.max_length = self.engine.max_seq_length

    @property
    def model(self) -> Any:
        """What runs the pairs: the sentence-transformers ``CrossEncoder`` (torch) or the ONNX engine. Both have
        ``max_seq_length``."""
        return self.engine.model if self.backend == "torch" else self.engine

    @property
    def last_stats(self) -> RerankStats:
        """Pairs, truncated pairs and seconds of the last ``score``/``score_pairs`` call."""
        return self.engine.last_stats

    @property
    def total_stats(self) -> RerankStats:
        """The same, summed over every call since the reranker was made."""
        return self.engine.total_stats

    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        return self.score_pairs([(query, t) for t in texts])

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        if not pairs:
            return []
        scores = self.engine.predict(pairs)
        # Plain floats: numpy float32 breaks JSON serialisation downstream. Multi-label models: first label.
        return [float(s) for s in scores[:, 0]]

    def __repr__(self) -> str:
        return f"CrossEncoderReranker({self.name!r}, backend={self.backend!r}, max_length={self.max_length})"
