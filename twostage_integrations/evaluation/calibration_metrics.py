"""What ``twostage eval`` reports about the final scores themselves: are they calibrated (ECE, Brier score on the
candidates labelled by qrels, before and after a calibration), and what does a ``min_score`` threshold keep."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..rerank.calibration import Calibration, brier_score, expected_calibration_error
from ..scores import SCORE_RANGES, check_min_score

Ranked = Mapping[str, Sequence[tuple[str, float]]]  # query id -> (doc id, final score), best first


def _is_probability(kind: str) -> bool:
    return SCORE_RANGES.get(kind) == (0.0, 1.0) and kind not in ("fused_minmax", "rerankers_rank", "fallback_recall")


def score_report(
    qrels: Mapping[str, Mapping[str, int]],
    ranked: Ranked,
    *,
    kind: str,
    top_k: int,
    calibration: Calibration | None = None,
    min_score: float | None = None,
    bins: int = 10,
) -> dict[str, Any]:
    """ECE/Brier of the final scores and, with ``min_score``, what the threshold keeps.

    Args:
        qrels: Query id -> {doc id: relevance}; relevance > 0 is relevant.
        ranked: Each query's final hits with their scores, best first (all candidates the last stage kept).
        kind: The final scores' ``score_kind``; ECE/Brier are computed for probability kinds only.
        top_k: Results returned per query (the threshold applies within them).
        calibration: The calibration the last stage applied: "before" inverts it to the raw scores.
        min_score: A threshold to measure.
        bins: Equal-width ECE bins.

    Returns:
        ``{"score_kind", "pairs", "relevant", "calibration": {...} | None, "min_score": {...} | None}``.

    Raises:
        InvalidParameterError: ``min_score`` outside the range of ``kind``.
    """
    min_score = check_min_score(min_score, kind)
    scores = np.array([s for hits in ranked.values() for _, s in hits], dtype=np.float64)
    labels = np.array([int(qrels.get(q, {}).get(d, 0) > 0) for q, hits in ranked.items() for d, _ in hits])
    out: dict[str, Any] = {"score_kind": kind, "pairs": int(scores.size), "relevant": int(labels.sum())}
    out["calibration"] = None
    if _is_probability(kind) and scores.size:
        after = {"ece": expected_calibration_error(scores, labels, bins=bins), "brier": brier_score(scores, labels)}
        out["calibration"] = {"bins": bins, "after" if calibration else "scores": after}
        if calibration is not None:
            raw = 1.0 / (1.0 + np.exp(-calibration.invert(scores)))
            before = {"ece": expected_calibration_error(raw, labels, bins=bins), "brier": brier_score(raw, labels)}
            out["calibration"].update(before=before, fitted=calibration.describe())
    out["min_score"] = None if min_score is None else threshold_report(qrels, ranked, min_score, top_k)
    return out


def threshold_report(qrels: Mapping[str, Mapping[str, int]], ranked: Ranked, min_score: float, top_k: int) -> dict:
    """What ``min_score`` keeps of each query's ``top_k``, against the ``top_k`` alone.

    Args:
        qrels: Query id -> {doc id: relevance}.
        ranked: Each query's final hits with their scores, best first.
        min_score: The threshold.
        top_k: Results per query before the threshold.

    Returns:
        ``threshold`` and ``top_k_only``: pooled precision of the returned results, mean recall per query (of
        its judged relevant documents), mean results per query; plus ``empty`` (share of queries returning
        nothing) and ``empty_with_relevant_candidate`` (share of queries with a relevant document among the
        candidates for which nothing is returned).
    """
    n = max(len(qrels), 1)
    stats: dict[str, list[float]] = {"threshold": [0, 0, 0.0], "top_k_only": [0, 0, 0.0]}  # returned, found, recall
    empty = missed = 0
    for qid, rels in qrels.items():
        relevant = {d for d, r in rels.items() if r > 0}
        hits = list(ranked.get(qid, ()))
        for name, kept in (("top_k_only", hits[:top_k]), ("threshold", [h for h in hits[:top_k] if h[1] >= min_score])):
            found = sum(d in relevant for d, _ in kept)
            stats[name][0] += len(kept)
            stats[name][1] += found
            stats[name][2] += found / len(relevant) if relevant else 0.0
            if name == "threshold" and not kept:
                empty += 1
                missed += any(d in relevant for d, _ in hits)
    out: dict[str, Any] = {"value": min_score, "top_k": top_k}
    for name, (returned, correct, recall) in stats.items():
        out[name] = {"precision": correct / returned if returned else 0.0, "recall": recall / n,
                     "results_per_query": returned / n}  # fmt: skip
    out.update(empty=empty / n, empty_with_relevant_candidate=missed / n)
    return out
