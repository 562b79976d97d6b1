"""Measure recall and reranking on a BEIR-format dataset (what ``twostage eval`` runs).

A BEIR folder holds ``corpus.jsonl`` (``_id``, ``title``, ``text``), ``queries.jsonl`` (``_id``, ``text``)
and ``qrels/<split>.tsv`` (query id, doc id, relevance; header optional). Metrics come from ``ir-measures``:
nDCG@k, Recall@k, Recall@limit, MRR@k (``RR@k``) and MAP@100 (``AP@100``), averaged over every judged query
(a query with no hits counts as 0), for the recall stage and after every rerank stage.

>>> from twostage_integrations.evaluation import evaluate
>>> report = evaluate("path/to/scifact", recall="hybrid", limit=100, reranker=None)  # doctest: +SKIP
>>> report.stages[-1].metrics["nDCG@10"]  # doctest: +SKIP
0.68...
"""

from .beir import BeirDataset, collection_name, index_corpus, load_beir, passage_text
from .metrics import compute_metrics, metric_names
from .report import EvalReport, StageReport, plot_limits
from .runner import CachedReranker, evaluate, evaluate_limits

__all__ = [
    "BeirDataset",
    "CachedReranker",
    "EvalReport",
    "StageReport",
    "collection_name",
    "compute_metrics",
    "evaluate",
    "evaluate_limits",
    "index_corpus",
    "load_beir",
    "metric_names",
    "passage_text",
    "plot_limits",
]
