"""Stage 2 with a local sentence-transformers cross-encoder, run by torch or by ONNX Runtime."""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

from ..hit import Hit
from ..models import RERANK_MODEL_ENV, load_model, resolve_rerank_model
from ..scores import cross_encoder_score_kind
from ..validation import check_positive_int, check_rerank_args
from .autopick import EnginePick
from .base import BaseReranker, apply_scores
from .engine import ACTIVATIONS, CrossEncoderEngine, RerankStats
from .onnx import AUTO, EXACT_BACKENDS, resolve_backend
from .windows import EVIDENCE_KEY, Evidence, WindowSplitter, check_long_docs, score_windows

logger = logging.getLogger(__name__)

# What the truncation warning tells a user to change: the Python argument and the CLI option that set it
# (query, demo, eval and serve have --rerank-max-length; a spec stage takes @max_length=N).
TRUNCATION_HINT = (
    "change the limit with max_length=N (CLI: --rerank-max-length N, or MODEL@max_length=N in a --pipeline)"
)
NO_MODEL_HINT = ", pass --rerank-model PATH, or skip stage 2 with --no-rerank"
# Pairs per forward pass when not given: sentence-transformers' default for torch; for ONNX Runtime the best
# of 8/16/32 on 2 cores with length-sorted pairs (docs/bench.md).
DEFAULT_BATCH_SIZE = {"torch": 32, "onnx": 16, "onnx-int8": 8}


# (model name, max_length) pairs whose cuts were reported: on corpora of long passages every call truncates, and a
# warning per query, or per engine of the same model, would drown the output.
_WARNED: set[tuple[str, int]] = set()
_warned_lock = threading.Lock()


def _load_torch(
    name: str, *, batch_size: int, max_length: int | None, device: str | None, activation: str | None
) -> CrossEncoderEngine:
    from sentence_transformers import CrossEncoder

    from .engine_torch import torch_activation, torch_engine

    kwargs: dict[str, Any] = {} if activation is None else {"activation_fn": torch_activation(activation)}
    model = load_model(
        name,
        lambda n, local_only: CrossEncoder(
            n, max_length=max_length, device=device, local_files_only=local_only, **kwargs
        ),
        kind="rerank",
        env_var=RERANK_MODEL_ENV,
        hint=NO_MODEL_HINT,
    )
    return torch_engine(model, batch_size=batch_size)


def _load_onnx(
    folder: Any, *, int8: bool, batch_size: int, max_length: int | None, threads: int | None, activation: str | None
) -> CrossEncoderEngine:
    from .onnx import OnnxCrossEncoder

    return OnnxCrossEncoder(
        folder, int8=int8, max_length=max_length, batch_size=batch_size, threads=threads, activation=activation
    )


def _auto_engine(
    name: str,
    *,
    batch_size: int | None,
    max_length: int | None,
    device: str | None,
    threads: int | None,
    activation: str | None,
) -> tuple[EnginePick, CrossEncoderEngine]:
    """``backend="auto"``: the fastest exact engine for this model and settings on this machine (cached pick, else
    timed now; see :mod:`.autopick`). A GPU ``device`` leaves torch only."""
    from .autopick import model_hash, pick_engine, pick_key
    from .onnx import physical_cores, read_max_length, snapshot

    sizes = {b: DEFAULT_BATCH_SIZE[b] if batch_size is None else batch_size for b in EXACT_BACKENDS}
    torch_kwargs: dict[str, Any] = {"max_length": max_length, "device": device, "activation": activation}
    if device not in (None, "cpu"):
        return EnginePick("torch", "only"), _load_torch(name, batch_size=sizes["torch"], **torch_kwargs)
    folder = load_model(name, snapshot, kind="rerank", env_var=RERANK_MODEL_ENV, hint=NO_MODEL_HINT)
    key = pick_key(
        model_hash=model_hash(folder),
        max_length=max_length if max_length is not None else read_max_length(folder),
        batch_sizes=sizes,
        threads=threads or physical_cores(),
    )
    loaders = {
        "onnx": lambda: _load_onnx(
            folder, int8=False, batch_size=sizes["onnx"], max_length=max_length, threads=threads, activation=activation
        ),
        "torch": lambda: _load_torch(name, batch_size=sizes["torch"], **torch_kwargs),
    }
    return pick_engine(loaders, key=key, label=name)


class CrossEncoderReranker(BaseReranker):
    """Score every (query, passage) pair with a cross-encoder and keep the best.

    What runs the model is an engine (:class:`~twostage_integrations.rerank.engine.CrossEncoderEngine`, as
    ``engine``): ONNX Runtime or torch, both tokenising each pair once and counting the pairs cut at
    ``max_length`` from that tokenisation. Scores are the model's output after its configured activation
    (sigmoid models give 0..1). ``last_stats`` / ``total_stats`` count pairs, pairs cut at ``max_length``,
    tokens and time; the first call that cuts pairs of a model at a given limit logs one warning (once per
    process, whichever backend), later ones log at DEBUG.

    Args:
        model: Hub id or local folder. Default ``cross-encoder/ms-marco-MiniLM-L-6-v2``, overridden by the
            ``TWOSTAGE_RERANK_MODEL`` environment variable (useful offline: point it at a model folder).
        backend: What runs the model.

            - ``"onnx"``: ONNX Runtime, fp32. Same scores as torch (within 1e-4) and faster on CPU; the model is
              exported once on first use and cached (``$TWOSTAGE_CACHE_DIR``, else ``~/.cache/twostage/onnx``).
              Needs ``pip install "twostage-integrations[onnx]"``; runs without importing torch.
            - ``"onnx-int8"``: ONNX Runtime with int8 weights: faster again, rankings close to fp32 but not
              identical.
            - ``"torch"``: sentence-transformers' ``CrossEncoder`` model (GPU via ``device``); same scores as its
              ``predict``.
            - ``"auto"``: the faster of ``"onnx"`` and ``"torch"`` (the engines with torch's scores) for this
              model and settings on this machine, timed on first use and cached beside the ONNX exports, so
              later processes only read the pick (``engine_pick`` says which and why; ``twostage doctor`` lists
              the picks). Never ``"onnx-int8"``: that is a quality choice, made explicitly.
            - ``None``: ``$TWOSTAGE_RERANK_BACKEND``, else ``"auto"``.
        batch_size: Pairs per forward pass (default 32 for torch, 16 for ONNX).
        max_length: Token limit per pair (default: the model's).
        device: torch device; torch only.
        threads: ONNX Runtime intra-op threads (default: physical cores).
        activation: ``"sigmoid"``, ``"identity"`` or ``"tanh"`` instead of the model's own.
        long_docs: What happens to a passage longer than fits beside the query (docs/stage2.md "Long documents"):
            ``"first"`` (default) scores the pair cut at ``max_length``; ``"max"`` scores every window of the
            passage and keeps the best; ``"top2mean"`` keeps the mean of the best two. With windows, every hit
            carries ``metadata["evidence"] = {"start", "end", "score"}``: the best window's character span in
            its text and that window's score. Passages that fit score exactly as with ``"first"``.
        window: Tokens of passage per window (default: what fits beside the query; never more).
        stride: Tokens between window starts (default: 60% of the window).
        calibration: ``None``/``"auto"``: apply the model's ``calibration.json`` when there is one (beside the
            model folder, or in the cache for hub models; made by ``twostage calibrate``); ``False``: raw scores;
            a path or a :class:`~twostage_integrations.rerank.calibration.Calibration`: that one. Calibrated
            scores are P(relevant), 0..1 (``score_kind`` ``"ce_calibrated"``); the ranking is unchanged.

    Raises:
        InvalidParameterError: An unknown backend, activation or ``long_docs``, a non-positive size, a GPU
            ``device`` with an ONNX backend, ``window >= max_length``, or ``stride`` above ``window``.
        MissingDependencyError: An ONNX backend without ``onnxruntime``/``tokenizers``.
        ModelNotFoundError: ``model`` looks like a path and nothing is there.
        ModelLoadError: The model cannot be loaded (not cached and the hub unreachable, or not a model).

    >>> from twostage_integrations import CrossEncoderReranker, Hit
    >>> ce = CrossEncoderReranker("path/to/cross-encoder", backend="onnx")  # doctest: +SKIP
    >>> hits = [Hit(id="1", text="Paris is in France."), Hit(id="2", text="Bananas are yellow.")]
    >>> [h.id for h in ce.rerank("capital of France", hits, top_k=1)]  # doctest: +SKIP
    ['1']
    """

    # Class-level defaults: a subclass that skips __init__ (a test double, a wrapper) behaves as long_docs="first".
    long_docs: str = "first"
    splitter: WindowSplitter | None = None
    score_kind = property(cross_encoder_score_kind)  # ce_sigmoid / ce_logit from the activation; docs/scores.md
    calibration: Any = None  # the Calibration applied to every score (see rerank/calibration.py), or None

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
        long_docs: str = "first",
        window: int | None = None,
        stride: int | None = None,
        calibration: bool | str | os.PathLike[str] | Any = None,
    ) -> None:
        from ..errors import InvalidParameterError

        requested = resolve_backend(backend)
        self.name = resolve_rerank_model(model)
        if batch_size is not None:
            check_positive_int(batch_size, "batch_size")
        if max_length is not None:
            check_positive_int(max_length, "max_length")
        if threads is not None:
            check_positive_int(threads, "threads")
        if activation is not None and activation not in ACTIVATIONS:
            raise InvalidParameterError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
        if requested != "torch" and requested != AUTO and device not in (None, "cpu"):
            raise InvalidParameterError(f"device={device!r} needs backend='torch'; the ONNX engine runs on the CPU")
        check_long_docs(long_docs, window, stride, max_length if max_length is not None else 1 << 30)
        self.engine: CrossEncoderEngine
        #: How ``backend="auto"`` chose (None when an engine was named).
        self.engine_pick: EnginePick | None = None
        folder: Any = None  # the model folder (ONNX); looked up only when a calibration file is, for torch
        if requested == AUTO:
            self.engine_pick, self.engine = _auto_engine(
                self.name, batch_size=batch_size, max_length=max_length, device=device, threads=threads,
                activation=activation,
            )  # fmt: skip
            requested = self.engine_pick.backend
        elif requested == "torch":
            size = DEFAULT_BATCH_SIZE["torch"] if batch_size is None else batch_size
            self.engine = _load_torch(
                self.name, batch_size=size, max_length=max_length, device=device, activation=activation
            )
        else:
            from .onnx import snapshot

            folder = load_model(self.name, snapshot, kind="rerank", env_var=RERANK_MODEL_ENV, hint=NO_MODEL_HINT)
            self.engine = _load_onnx(
                folder,
                int8=requested == "onnx-int8",
                batch_size=DEFAULT_BATCH_SIZE[requested] if batch_size is None else batch_size,
                max_length=max_length,
                threads=threads,
                activation=activation,
            )
        #: The engine running the model: ``"onnx"``, ``"onnx-int8"`` or ``"torch"`` (``auto``'s pick, resolved).
        self.backend = requested
        self.batch_size = int(getattr(self.engine, "batch_size", batch_size or DEFAULT_BATCH_SIZE[requested]))
        self.max_length = self.engine.max_length
        self.long_docs = long_docs
        self.splitter = self._splitter(window, stride) if long_docs != "first" else None
        self._calibrate(calibration, folder)

    def _splitter(self, window: int | None, stride: int | None) -> WindowSplitter:
        """The window splitter on the engine's own tokenizer (checked against the engine's real limit)."""
        from ..errors import InvalidParameterError

        tokenizer = getattr(self.engine, "tokenizer", None)
        if tokenizer is None:
            raise InvalidParameterError(
                f"long_docs={self.long_docs!r} needs a fast tokenizer (tokenizer.json) to cut windows; {self.name} "
                f"has none: use long_docs='first'"
            )
        return WindowSplitter(tokenizer, self.max_length, window=window, stride=stride)

    def _calibrate(self, setting: Any, folder: Any) -> None:
        """Load the calibration ``setting`` names (see the class); ``base_score_kind`` is the raw scores' kind."""
        from .calibration import resolve_calibration
        from .onnx_export import snapshot

        self.calibration = None
        self.base_score_kind = cross_encoder_score_kind(self)
        self.calibration = resolve_calibration(
            setting, self.name, folder or (lambda: snapshot(self.name, True)), self.base_score_kind
        )
        fitted = (self.calibration.fitted_on or {}).get("long_docs", "first") if self.calibration else self.long_docs
        if fitted != self.long_docs:  # the map still keeps the order; its probabilities are for other scores
            logger.warning(
                "%s: the calibration was fitted on long_docs=%r scores, this reranker gives long_docs=%r ones; its "
                "probabilities will be off: run `twostage calibrate ... --long-docs %s --out FILE` and pass "
                "calibration=FILE", self.name, fitted, self.long_docs, self.long_docs,
            )  # fmt: skip

    @property
    def model(self) -> Any:
        """What runs the pairs: the sentence-transformers ``CrossEncoder`` (torch) or the ONNX engine. Both have
        ``max_seq_length``; ``engine`` is the :class:`~twostage_integrations.rerank.engine.CrossEncoderEngine`."""
        return getattr(self.engine, "model", None) if self.backend == "torch" else self.engine

    @property
    def last_stats(self) -> RerankStats:
        """Pairs, truncated pairs and seconds of the last ``score``/``score_pairs`` call."""
        return self.engine.last_stats

    @property
    def total_stats(self) -> RerankStats:
        """The same, summed over every call since the reranker was made."""
        return self.engine.total_stats

    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        """Score passages for one query (the pairs run through :meth:`score_pairs`).

        Args:
            query: The query.
            texts: Passages to score.

        Returns:
            One float per text, in input order (higher = more relevant).
        """
        return self.score_pairs([(query, t) for t in texts])

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """Score (query, text) pairs in one engine call; queries may differ from pair to pair. Updates
        :attr:`last_stats` and :attr:`total_stats`, and logs pairs cut at ``max_length`` (see the class).

        Args:
            pairs: (query, text) pairs.

        Returns:
            One float per pair, in input order: the first label's score for multi-label models.
        """
        if self.splitter is not None:
            return [score for score, _ in self.score_pairs_with_evidence(pairs)]
        return self.score_pairs_cut(pairs)

    def score_pairs_cut(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """The engine's scores for the pairs as given, each cut at ``max_length`` (``long_docs="first"`` whatever
        this reranker's ``long_docs``; what ``serve`` runs for a TEI request with ``truncate: true``).

        Args:
            pairs: (query, text) pairs.

        Returns:
            One float per pair, in input order.
        """
        return self._calibrated(self._raw_cut(pairs))

    def _raw_cut(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """The engine's uncalibrated scores (first label) for the pairs, each cut at ``max_length``."""
        if not pairs:
            return []
        scores = self.engine.predict(pairs)
        self._report_truncation(self.engine.last_stats)
        # Plain floats: numpy float32 breaks JSON serialisation downstream.
        return [float(s) for s in scores[:, 0]]  # multi-label models: the first label

    def _calibrated(self, scores: Sequence[float]) -> list[float]:
        """``scores`` through the calibration (unchanged without one)."""
        if self.calibration is None or not scores:
            return list(scores)
        import numpy as np

        from .calibration import to_logit

        # float32, as the engine returns them: to_logit's clamps are float32's
        mapped = self.calibration.apply_logit(to_logit(np.asarray(scores, dtype=np.float32), self.base_score_kind))
        return [float(s) for s in mapped]

    def score_pairs_with_evidence(
        self, pairs: Sequence[tuple[str, str]], *, how: str | None = None, limit: int | None = None
    ) -> list[tuple[float, Evidence]]:
        """Score (query, passage) pairs window by window (all windows in one engine call) and say which window won.

        Args:
            pairs: (query, passage) pairs; queries may differ.
            how: ``"max"`` or ``"top2mean"``; None: this reranker's ``long_docs`` (``"max"`` when that is
                ``"first"``).
            limit: Read only each passage's first ``limit`` tokens (``serve``'s ``max_tokens_per_doc``).

        Returns:
            Per pair, ``(score, evidence)`` in input order; ``last_stats`` counts windows as pairs.
        """
        how = how or (self.long_docs if self.long_docs != "first" else "max")
        check_long_docs(how, None, None, self.max_length)
        splitter = self.splitter if self.splitter is not None else self._splitter(None, None)
        # Aggregate raw window scores, then calibrate: a calibration fitted with these long_docs maps aggregates.
        scored = score_windows(splitter, self._raw_cut, pairs, how, limit=limit)
        if self.calibration is None:
            return scored
        totals = self._calibrated([score for score, _ in scored])
        windows = self._calibrated([ev.score for _, ev in scored])
        pairs_out = zip(totals, scored, windows, strict=True)
        return [(total, dataclasses.replace(ev, score=w)) for total, (_, ev), w in pairs_out]

    def rerank(self, query: str, hits: Sequence[Hit], top_k: int | None = None) -> list[Hit]:
        """Reorder hits by :meth:`score`; with ``long_docs`` windows, each hit also gets ``metadata["evidence"]``.

        Args:
            query: The query text.
            hits: Stage 1's hits (never mutated).
            top_k: How many to keep; ``None`` keeps all.

        Returns:
            New hits, best first, with ``rerank_score``, ``rerank_rank`` and ``score`` set.

        Raises:
            InvalidQueryError: If the query is empty, blank or not a string.
            InvalidParameterError: If ``top_k`` is below 1.
        """
        if self.splitter is None:
            return super().rerank(query, hits, top_k)
        check_rerank_args(query, top_k)
        return _with_evidence(hits, self.score_pairs_with_evidence([(query, h.text) for h in hits]), top_k)

    async def arerank(self, query: str, hits: Sequence[Hit], top_k: int | None = None) -> list[Hit]:
        """Async :meth:`rerank` (the model runs in a worker thread).

        Args:
            query: The query text.
            hits: Stage 1's hits (never mutated).
            top_k: How many to keep; ``None`` keeps all.

        Returns:
            New hits, best first, as :meth:`rerank` returns them.
        """
        if self.splitter is None:
            return await super().arerank(query, hits, top_k)
        import asyncio

        return await asyncio.to_thread(self.rerank, query, hits, top_k)

    def _report_truncation(self, stats: RerankStats) -> None:
        """Warn the first time pairs of this model are cut at this limit, in this process; later cuts log at DEBUG
        (the counts stay in ``last_stats``/``total_stats`` for bench and eval to print)."""
        if not stats.truncated:
            return
        key = (self.name, self.max_length)
        with _warned_lock:
            first = key not in _WARNED
            _WARNED.add(key)
        (logger.warning if first else logger.debug)(
            "%s: %d of %d (query, text) pairs were longer than max_length=%d tokens and were cut (their ends are "
            "not scored); " + TRUNCATION_HINT,
            self.name,
            stats.truncated,
            stats.pairs,
            self.max_length,
        )

    def __repr__(self) -> str:
        windows = f", long_docs={self.long_docs!r}" if self.long_docs != "first" else ""
        return f"CrossEncoderReranker({self.name!r}, backend={self.backend!r}, max_length={self.max_length}{windows})"


def _with_evidence(hits: Sequence[Hit], scored: list[tuple[float, Evidence]], top_k: int | None) -> list[Hit]:
    """Hits ordered by their windowed scores, each carrying its evidence in a copy of its metadata."""
    marked = [
        dataclasses.replace(h, metadata={**h.metadata, EVIDENCE_KEY: evidence.to_dict()})
        for h, (_, evidence) in zip(hits, scored, strict=True)
    ]
    return apply_scores(marked, [score for score, _ in scored], top_k)
