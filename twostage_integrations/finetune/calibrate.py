"""``twostage calibrate``: label (query, passage) pairs with qrels and stage 1, score them, fit P(relevant).

The pairs are what the reranker sees at query time: for each judged query of the split, its relevant documents
(qrels) and every candidate stage 1 returns at ``limit`` that the qrels do not mark relevant (mined with the
same :func:`~twostage_integrations.finetune.data.mine_negatives` as fine-tuning, taking all of them).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidParameterError
from ..evaluation.beir import BeirDataset, index_corpus, load_beir
from ..evaluation.runner import require_beir
from ..recall.factory import recall_by_kind
from ..rerank.calibration import Calibration, calibration_path, fit_calibration
from ..validation import check_positive_int
from .data import Pair, PairBuilder, mine_negatives

logger = logging.getLogger(__name__)

# Pairs per scoring call: large enough for length-bucketed batches, small enough for a steady progress bar.
_CHUNK = 512


@dataclass
class CalibrationResult:
    """What :func:`calibrate` did.

    Attributes:
        calibration: The fitted map (also written to ``path``).
        path: The ``calibration.json`` written.
        n_queries: Judged queries the pairs came from.
        seconds: Wall-clock seconds (mining, scoring, fitting).
    """

    calibration: Calibration
    path: Path
    n_queries: int
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: the calibration, the path, queries and seconds."""
        return {"path": str(self.path), "n_queries": self.n_queries, "seconds": self.seconds,
                "calibration": self.calibration.to_dict()}  # fmt: skip


def calibration_pairs(
    data: BeirDataset,
    *,
    recall: str = "hybrid",
    limit: int = 50,
    max_queries: int | None = None,
    db: str | os.PathLike[str] | None = None,
    embedding_model: Any = None,
    progress: bool = True,
) -> tuple[list[Pair], int]:
    """Labelled pairs: qrels positives plus stage 1's other candidates at ``limit`` as negatives.

    Args:
        data: A BEIR dataset with qrels.
        recall: Stage 1 (``dense``, ``bm25``, ``hybrid``) over the cached collection.
        limit: Candidates per query (use the pipeline's ``limit``).
        max_queries: Keep the first N judged queries.
        db: The embedded database folder for the cached collection.
        embedding_model: The embedding model of the cached collection.
        progress: Show progress bars.

    Returns:
        ``(pairs, n_queries)``.
    """
    limit = check_positive_int(limit, "limit")
    builder = PairBuilder(data, "qrels")
    queries = builder.queries(max_queries=max_queries)
    chroma = index_corpus(data, db=db, embedding_model=embedding_model, progress=progress)
    retriever = recall_by_kind(recall, chroma)
    texts = [q.text for q in queries] if recall in ("dense", "hybrid") else []
    with chroma.embedder.cached_queries(texts, progress=progress):
        # every candidate that is not a judged positive: hard=limit, skip=0, no random ones
        mine_negatives(queries, retriever, list(data.corpus), hard=limit, random_negatives=0, depth=limit, skip=0,
                       progress=progress)  # fmt: skip
    return builder.pairs(queries), len(queries)


def calibrate(
    dataset_dir: str | os.PathLike[str],
    rerank_model: str | os.PathLike[str] | None = None,
    *,
    split: str = "train",
    recall: str = "hybrid",
    limit: int = 50,
    max_queries: int | None = None,
    method: str = "auto",
    backend: str | None = None,
    max_length: int | None = None,
    long_docs: str = "first",
    out: str | os.PathLike[str] | None = None,
    db: str | os.PathLike[str] | None = None,
    embedding_model: Any = None,
    progress: bool = True,
) -> CalibrationResult:
    """Fit and save the calibration of a cross-encoder on a BEIR split (see the module and docs/scores.md).

    Args:
        dataset_dir: BEIR folder with ``qrels/<split>.tsv``.
        rerank_model: The cross-encoder (folder or hub id; default as ``--rerank-model``).
        split: The labelled split to fit on (not the one you evaluate on).
        recall: Stage 1 mining the negatives.
        limit: Candidates per query.
        max_queries: Keep the first N judged queries.
        method: ``auto`` (lower held-out log-loss), ``platt`` or ``isotonic``.
        backend: The reranker's engine (``onnx``, ``onnx-int8``, ``torch``).
        max_length: Token limit per pair.
        long_docs: How passages longer than ``max_length`` are scored (``first``, ``max``, ``top2mean``): fit on
            the scores your reranker gives; the file records it and a reranker with other settings warns.
        out: Where to write (default: beside the model, or the cache for hub/read-only models).
        db: The embedded database folder for the cached collection.
        embedding_model: The embedding model of the cached collection.
        progress: Show progress bars.

    Returns:
        The calibration and where it was written.

    Raises:
        InvalidDocumentError: The dataset lacks the split's qrels (raised before any model loads).
        InvalidParameterError: Bad settings, or pairs of one label only.
    """
    from ..rerank.cross_encoder import CrossEncoderReranker

    t0 = time.perf_counter()
    require_beir(dataset_dir, split)  # a split without qrels fails now, before models and indexing
    if max_queries is not None:
        check_positive_int(max_queries, "max_queries")
    data = load_beir(dataset_dir, split)
    ce = CrossEncoderReranker(rerank_model, backend=backend, max_length=max_length, long_docs=long_docs,
                              calibration=False)  # fmt: skip
    if ce.base_score_kind not in ("ce_sigmoid", "ce_logit"):
        raise InvalidParameterError(f"{ce.name} gives {ce.base_score_kind} scores; calibration needs sigmoid or logit")
    pairs, n_queries = calibration_pairs(data, recall=recall, limit=limit, max_queries=max_queries, db=db,
                                         embedding_model=embedding_model, progress=progress)  # fmt: skip
    scores = _score(ce, pairs, progress)
    cal = fit_calibration(scores, [p.label for p in pairs], base_kind=ce.base_score_kind, method=method)
    cal.model = ce.name
    cal.fitted_on = {"dataset": data.name, "split": split, "recall": recall, "limit": limit, "queries": n_queries,
                     "backend": ce.backend, "max_length": ce.max_length, "long_docs": ce.long_docs}  # fmt: skip
    path = Path(out) if out is not None else calibration_path(ce.name, _folder(ce), for_writing=True)
    assert path is not None  # for_writing always names a file
    cal.save(path)
    logger.info("calibration of %s written to %s (%s)", ce.name, path, cal.describe())
    return CalibrationResult(cal, path, n_queries, time.perf_counter() - t0)


def _folder(ce: Any) -> Path:
    from ..rerank.onnx_export import snapshot

    return snapshot(ce.name, True)


def _score(ce: Any, pairs: list[Pair], progress: bool) -> list[float]:
    from tqdm.auto import tqdm

    out: list[float] = []
    with tqdm(total=len(pairs), desc="scoring pairs", unit="pair", disable=not progress) as bar:
        for i in range(0, len(pairs), _CHUNK):
            chunk = pairs[i : i + _CHUNK]
            out += ce.score_pairs([(p.query, p.passage) for p in chunk])
            bar.update(len(chunk))
    return out
