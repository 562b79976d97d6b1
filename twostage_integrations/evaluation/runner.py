"""Run recall and every rerank stage over a dataset's queries and measure each stage."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from tqdm.auto import tqdm

from ..embeddings import BaseEmbedder
from ..errors import InvalidDocumentError
from ..extras import check_eval_extras
from ..recall.base import Recall, query_embedder
from ..recall.factory import recall_by_kind
from ..rerank.base import BaseReranker, Reranker
from ..rerank.cache import ScoreCache
from ..rerank.cascade import Cascade, as_cascade
from ..scores import check_min_score, score_kind_of
from ..validation import check_positive_int
from .beir import BeirDataset, index_corpus, load_beir
from .calibration_metrics import score_report
from .metrics import compute_metrics
from .report import EvalReport, StageReport

RerankSpec = Reranker | Sequence[tuple[Reranker, int | None] | Reranker] | None


def missing_beir_file(folder: str | os.PathLike[str], split: str | None = "test") -> Path | None:
    """The first file a BEIR folder lacks, checked without reading anything (so long commands fail before
    their long part, not after it).

    Args:
        folder: The BEIR folder.
        split: The qrels split that will be read; ``None`` checks ``corpus.jsonl`` only.

    Returns:
        ``corpus.jsonl``, ``queries.jsonl`` or ``qrels/<split>.tsv`` when missing, else ``None``.
    """
    path = Path(folder).expanduser()
    files = [path / "corpus.jsonl"]
    if split is not None:
        files += [path / "queries.jsonl", path / "qrels" / f"{split}.tsv"]
    return next((f for f in files if not f.is_file()), None)


def require_beir(folder: str | os.PathLike[str], split: str | None = "test") -> None:
    """Fail at once, as :func:`load_beir` would after reading, when a BEIR folder lacks a file ``split`` needs.

    Args:
        folder: The BEIR folder.
        split: The qrels split that will be read; ``None`` checks ``corpus.jsonl`` only.

    Raises:
        InvalidDocumentError: The first missing file, with the available splits when it is the qrels.
    """
    missing = missing_beir_file(folder, split)
    if missing is None:
        return
    qrels = Path(folder).expanduser() / "qrels"
    hint = ""
    if missing.parent == qrels:
        hint = f" (available splits: {', '.join(sorted(p.stem for p in qrels.glob('*.tsv'))) or 'none'})"
    raise InvalidDocumentError(
        f"{missing} not found: a BEIR folder needs corpus.jsonl, queries.jsonl and qrels/<split>.tsv{hint}"
    )


def _stages(reranker: RerankSpec) -> Cascade | None:
    """Recall only (None) for ``None`` or an empty list; else every stage, as one cascade."""
    if reranker is None or (isinstance(reranker, Sequence) and not isinstance(reranker, str) and not reranker):
        return None
    return as_cascade(reranker)


@dataclass
class _Stage1:
    """Stage 1 as :func:`evaluate` built it (setup done), ready for timed queries."""

    retriever: Recall
    name: str
    embedder_name: str
    index_seconds: float


def _prepare_recall(
    data: BeirDataset,
    recall: str | Recall,
    *,
    db: str | os.PathLike[str] | None,
    embedding_model: str | os.PathLike[str] | BaseEmbedder | None,
    rrf_k: float,
    candidates_per_arm: int | None,
    progress: bool,
) -> _Stage1:
    """Index the corpus (cached) and build the named recall over it, or take the caller's."""
    t0 = time.perf_counter()
    if isinstance(recall, str):
        chroma = index_corpus(data, db=db, embedding_model=embedding_model, progress=progress)
        retriever = recall_by_kind(recall, chroma, rrf_k=rrf_k, candidates_per_arm=candidates_per_arm)
        stage1 = _Stage1(retriever, recall, chroma.embedder.name, 0.0)
    else:
        chroma = None
        stage1 = _Stage1(recall, type(recall).__name__, getattr(query_embedder(recall), "name", ""), 0.0)
    stage1.index_seconds = time.perf_counter() - t0
    if chroma is not None and stage1.name in ("bm25", "hybrid"):
        retriever = stage1.retriever
        sparse = cast(Any, retriever if stage1.name == "bm25" else cast(Any, retriever).sparse)
        sparse.refresh()  # build/load the BM25 index now: setup, not per-query latency
    return stage1


@dataclass
class _Runs:
    """Per stage (recall first, then each rerank stage): each query's ranking, total seconds, output sizes."""

    rankings: list[dict[str, list[str]]]
    seconds: list[float]
    sizes: list[list[int]]
    final: dict[str, list[tuple[str, float]]] = field(default_factory=dict)  # the last stage's (id, score)


def _run_queries(
    retriever: Recall, cascade: Cascade | None, queries: dict[str, str], limit: int, progress: bool
) -> _Runs:
    """Every query through recall and each rerank stage, timing each stage."""
    texts = list(queries.values())
    recall_seconds = 0.0
    query_cache = ExitStack()
    embedder = query_embedder(retriever)
    if embedder is not None:
        # Every query embedded in one batched pass (counted as recall time); search() reads them back.
        t0 = time.perf_counter()
        query_cache.enter_context(embedder.cached_queries(texts, progress=progress))
        recall_seconds += time.perf_counter() - t0

    n_stages = 1 + (len(cascade.stages) if cascade else 0)
    seconds = [recall_seconds] + [0.0] * (n_stages - 1)
    runs = _Runs(rankings=[{} for _ in range(n_stages)], seconds=seconds, sizes=[[] for _ in range(n_stages)])
    with query_cache:  # the cached vectors are dropped when the run ends
        for qid, text in tqdm(list(queries.items()), desc="queries", unit="query", disable=not progress):
            t0 = time.perf_counter()
            candidates = retriever.search(text, limit)
            runs.seconds[0] += time.perf_counter() - t0
            outputs = [(candidates, 0.0)]
            if cascade:
                outputs += [(o.hits, o.seconds) for o in cascade.run(text, candidates)]
            runs.final[qid] = [(h.id, h.score) for h in outputs[-1][0]]
            for i, (hits, secs) in enumerate(outputs):
                runs.rankings[i][qid] = [h.id for h in hits]
                runs.sizes[i].append(len(hits))
                if i:
                    runs.seconds[i] += secs
    return runs


def _stage_reports(data: BeirDataset, runs: _Runs, names: list[str], limit: int, top_k: int) -> list[StageReport]:
    """One :class:`StageReport` per stage: its metrics, time, and mean hits in and out."""
    n_queries = len(data.queries)
    reports: list[StageReport] = []
    cumulative = 0.0
    for i, name in enumerate(names):
        cumulative += runs.seconds[i]
        reports.append(
            StageReport(
                name=name,
                metrics=compute_metrics(data.qrels, runs.rankings[i], limit=limit, k=top_k),
                seconds=runs.seconds[i],
                n_queries=n_queries,
                mean_in=(sum(runs.sizes[i - 1]) if i else n_queries * limit) / n_queries,
                mean_out=sum(runs.sizes[i]) / n_queries,
                cumulative_seconds=cumulative,
            )
        )
    return reports


def evaluate(
    dataset: BeirDataset | str | os.PathLike[str],
    *,
    split: str = "test",
    recall: str | Recall = "dense",
    limit: int = 100,
    top_k: int = 10,
    reranker: RerankSpec = None,
    max_queries: int | None = None,
    db: str | os.PathLike[str] | None = None,
    embedding_model: str | os.PathLike[str] | BaseEmbedder | None = None,
    rrf_k: float = 60.0,
    candidates_per_arm: int | None = None,
    progress: bool = True,
    min_score: float | None = None,
) -> EvalReport:
    """Recall ``limit`` candidates per query, rerank them, and measure every stage (each on its own output).

    Args:
        dataset: A loaded dataset, or a BEIR folder.
        split: The qrels split to read (for a folder).
        recall: ``"dense"``, ``"bm25"``, ``"hybrid"`` (built over the cached collection, see :func:`index_corpus`),
            or any :class:`Recall` already holding the corpus (ids must be the BEIR doc ids).
        limit: Candidates recalled per query.
        top_k: The cut-off of the @k metrics (nDCG@k, Recall@k, MRR@k).
        reranker: ``None`` (recall only), a reranker, ``(reranker, keep)`` stages, or a :class:`Cascade`. The last
            stage keeps all unless its ``keep`` says otherwise, so Recall@limit and MAP@100 see the whole list.
        max_queries: Keep the first N judged queries; ``None`` keeps all.
        db: The embedded database folder for the cached collection.
        embedding_model: The embedder or model name for the cached collection.
        rrf_k: The RRF constant of ``"hybrid"``.
        candidates_per_arm: Hits each hybrid arm returns (default: ``limit``).
        progress: Show progress bars.
        min_score: Also measure this threshold on the final scores (``report.scores["min_score"]``).

    Returns:
        The configuration, one :class:`StageReport` per stage (recall first), and ``scores``: the final scores'
        ECE/Brier (before/after a calibration) and the threshold's precision/recall (see
        :func:`~twostage_integrations.evaluation.calibration_metrics.score_report`).

    Raises:
        MissingDependencyError: If ``ir-measures`` (or ``bm25s`` for BM25/hybrid) is missing; before indexing.
        InvalidDocumentError: If the dataset is missing files, malformed, or has no judged queries.
        InvalidParameterError: If ``limit``, ``top_k`` or ``max_queries`` is below 1, or a stage is no reranker.
    """
    limit = check_positive_int(limit, "limit")
    top_k = check_positive_int(top_k, "top_k")
    check_eval_extras(recall)  # a missing extra fails now, not after indexing the corpus
    if isinstance(dataset, BeirDataset):
        data = dataset.head(max_queries) if max_queries is not None else dataset
    else:
        data = load_beir(dataset, split, max_queries=max_queries)
    if not data.queries:
        raise InvalidDocumentError(f"{data.path}: no judged queries for split {data.split!r}")
    cascade = _stages(reranker)
    stage1 = _prepare_recall(
        data,
        recall,
        db=db,
        embedding_model=embedding_model,
        rrf_k=rrf_k,
        candidates_per_arm=candidates_per_arm,
        progress=progress,
    )
    kind = score_kind_of(cascade, "rerank") if cascade else score_kind_of(stage1.retriever, "recall")
    check_min_score(min_score, kind)  # before the queries run, not after them
    runs = _run_queries(stage1.retriever, cascade, data.queries, limit, progress)
    report = _new_report(data, stage1, limit, top_k, cascade, rrf_k, candidates_per_arm)
    names = [f"recall ({stage1.name})"] + (_stage_names(cascade) if cascade else [])
    report.stages.extend(_stage_reports(data, runs, names, limit, top_k))
    calibration = getattr(cascade.stages[-1][0], "calibration", None) if kind == "ce_calibrated" and cascade else None
    report.scores = score_report(data.qrels, runs.final, kind=kind, top_k=top_k, calibration=calibration,
                                 min_score=min_score)  # fmt: skip
    return report


def _new_report(
    data: BeirDataset,
    stage1: _Stage1,
    limit: int,
    top_k: int,
    cascade: Cascade | None,
    rrf_k: float,
    candidates_per_arm: int | None,
) -> EvalReport:
    """The report's configuration, before any stage is measured."""
    return EvalReport(
        dataset=data.name,
        split=data.split,
        recall=stage1.name,
        limit=limit,
        top_k=top_k,
        n_queries=len(data.queries),
        n_docs=len(data.corpus),
        embedding_model=stage1.embedder_name,
        index_seconds=stage1.index_seconds,
        config={
            "rrf_k": rrf_k,
            "candidates_per_arm": candidates_per_arm,
            "reranker": cascade.name if cascade else None,
        },
    )


def _stage_names(cascade: Cascade) -> list[str]:
    return [getattr(r, "name", type(r).__name__) + (f" (keep {k})" if k else "") for r, k in cascade.stages]


def evaluate_limits(
    dataset: BeirDataset | str | os.PathLike[str], limits: Sequence[int], **kwargs: Any
) -> list[EvalReport]:
    """:func:`evaluate` once per ``limit`` (for the quality/latency trade-off plot).

    Args:
        dataset: A loaded dataset, or a BEIR folder (read once).
        limits: The limits to run (duplicates are run once).
        **kwargs: :func:`evaluate`'s other keywords. Wrap the reranker in :class:`CachedReranker` so pairs
            are scored once across limits.

    Returns:
        One report per distinct limit, in increasing order.
    """
    data = (
        dataset
        if isinstance(dataset, BeirDataset)
        else load_beir(dataset, kwargs.pop("split", "test"), max_queries=kwargs.pop("max_queries", None))
    )
    return [evaluate(data, limit=limit, **kwargs) for limit in sorted(set(limits))]


class CachedReranker(ScoreCache):
    """An unbounded :class:`~twostage_integrations.rerank.cache.ScoreCache` that also times the pairs it
    really scores, so many configurations can be compared for the cost of one.

    Stage timings of runs that hit the cache are not latencies; ``pairs_scored`` and ``seconds_scoring`` give
    the real cost of the pairs the inner reranker actually scored.

    Args:
        reranker: The reranker whose scores are cached.
    """

    def __init__(self, reranker: BaseReranker) -> None:
        super().__init__(reranker, maxsize=None)
        self.pairs_scored = 0
        self.seconds_scoring = 0.0

    def _score_misses(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        t0 = time.perf_counter()
        scores = super()._score_misses(pairs)
        self.seconds_scoring += time.perf_counter() - t0
        self.pairs_scored += len(pairs)
        return scores
