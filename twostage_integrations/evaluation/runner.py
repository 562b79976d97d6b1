"""Run recall and every rerank stage over a dataset's queries and measure each stage."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any, cast

from tqdm.auto import tqdm

from ..embeddings import BaseEmbedder
from ..errors import InvalidDocumentError
from ..extras import check_eval_extras
from ..recall.base import Recall, query_embedder
from ..recall.hybrid import recall_by_kind
from ..rerank.base import BaseReranker, Reranker
from ..rerank.cache import ScoreCache
from ..rerank.cascade import Cascade
from ..validation import check_positive_int
from .beir import BeirDataset, index_corpus, load_beir
from .metrics import compute_metrics
from .report import EvalReport, StageReport

RerankSpec = Reranker | Sequence[tuple[Reranker, int | None] | Reranker] | None


def _stages(reranker: RerankSpec) -> Cascade | None:
    if reranker is None:
        return None
    if isinstance(reranker, Cascade):
        return reranker
    if isinstance(reranker, Sequence) and not isinstance(reranker, str):
        return Cascade(list(reranker)) if reranker else None
    return Cascade([(reranker, None)])


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
) -> EvalReport:
    """Recall ``limit`` candidates per query, rerank them, and measure every stage.

    ``recall``: ``"dense"``, ``"bm25"``, ``"hybrid"`` (built over the cached collection, see
    :func:`index_corpus`), or any :class:`Recall` already holding the corpus (ids must be the BEIR doc ids).
    ``reranker``: ``None`` (recall only), a reranker, a list of ``(reranker, keep)`` stages, or a
    :class:`Cascade`. Every stage is measured on its own output; the last stage keeps all candidates unless
    its ``keep`` says otherwise, so Recall@limit and MAP@100 see the whole reranked list. ``top_k`` is the
    cut-off of the @k metrics (nDCG@k, Recall@k, MRR@k).
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
    qids = list(data.queries)
    texts = [data.queries[q] for q in qids]

    t0 = time.perf_counter()
    if isinstance(recall, str):
        chroma = index_corpus(data, db=db, embedding_model=embedding_model, progress=progress)
        retriever = recall_by_kind(recall, chroma, rrf_k=rrf_k, candidates_per_arm=candidates_per_arm)
        recall_name = recall
        embedder_name = chroma.embedder.name
    else:
        chroma, retriever, recall_name = None, recall, type(recall).__name__
        embedder_name = getattr(query_embedder(recall), "name", "")
    index_seconds = time.perf_counter() - t0

    if chroma is not None and recall_name in ("bm25", "hybrid"):
        sparse = cast(Any, retriever if recall_name == "bm25" else cast(Any, retriever).sparse)
        sparse.refresh()  # build/load the BM25 index now: setup, not per-query latency
    recall_seconds = 0.0
    query_cache = ExitStack()
    embedder = query_embedder(retriever)
    if embedder is not None:
        # Every query embedded in one batched pass (counted as recall time); search() reads them back.
        t0 = time.perf_counter()
        query_cache.enter_context(embedder.cached_queries(texts, progress=progress))
        recall_seconds += time.perf_counter() - t0

    n_stages = 1 + (len(cascade.stages) if cascade else 0)
    rankings: list[dict[str, list[str]]] = [{} for _ in range(n_stages)]
    seconds = [recall_seconds] + [0.0] * (n_stages - 1)
    sizes: list[list[int]] = [[] for _ in range(n_stages)]
    names = [f"recall ({recall_name})"] + (_stage_names(cascade) if cascade else [])
    with query_cache:  # the cached vectors are dropped when the run ends
        for qid, text in tqdm(list(zip(qids, texts, strict=True)), desc="queries", unit="query", disable=not progress):
            t0 = time.perf_counter()
            candidates = retriever.search(text, limit)
            seconds[0] += time.perf_counter() - t0
            outputs = [(candidates, 0.0)]
            if cascade:
                outputs += [(o.hits, o.seconds) for o in cascade.run(text, candidates)]
            for i, (hits, secs) in enumerate(outputs):
                rankings[i][qid] = [h.id for h in hits]
                sizes[i].append(len(hits))
                if i:
                    seconds[i] += secs

    report = EvalReport(
        dataset=data.name,
        split=data.split,
        recall=recall_name,
        limit=limit,
        top_k=top_k,
        n_queries=len(qids),
        n_docs=len(data.corpus),
        embedding_model=embedder_name,
        index_seconds=index_seconds,
        config={
            "rrf_k": rrf_k,
            "candidates_per_arm": candidates_per_arm,
            "reranker": cascade.name if cascade else None,
        },
    )
    cumulative = 0.0
    for i in range(n_stages):
        cumulative += seconds[i]
        report.stages.append(
            StageReport(
                name=names[i],
                metrics=compute_metrics(data.qrels, rankings[i], limit=limit, k=top_k),
                seconds=seconds[i],
                n_queries=len(qids),
                mean_in=(sum(sizes[i - 1]) if i else len(qids) * limit) / len(qids),
                mean_out=sum(sizes[i]) / len(qids),
                cumulative_seconds=cumulative,
            )
        )
    return report


def _stage_names(cascade: Cascade) -> list[str]:
    return [getattr(r, "name", type(r).__name__) + (f" (keep {k})" if k else "") for r, k in cascade.stages]


def evaluate_limits(
    dataset: BeirDataset | str | os.PathLike[str], limits: Sequence[int], **kwargs: Any
) -> list[EvalReport]:
    """:func:`evaluate` once per ``limit`` (for the quality/latency trade-off plot)."""
    data = (
        dataset
        if isinstance(dataset, BeirDataset)
        else load_beir(dataset, kwargs.pop("split", "test"), max_queries=kwargs.pop("max_queries", None))
    )
    return [evaluate(data, limit=limit, **kwargs) for limit in sorted(set(limits))]


class CachedReranker(ScoreCache):
    """An unbounded :class:`~twostage_integrations.rerank.cache.ScoreCache` that also times the pairs it
    really scores, so many configurations can be compared for the cost of one. Stage timings of runs that hit
    the cache are not latencies; ``pairs_scored`` and ``seconds_scoring`` give the real cost of the pairs the
    inner reranker actually scored."""

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
