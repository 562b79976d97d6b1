"""Measure recall and reranking on a BEIR-format dataset (what ``twostage eval`` runs).

A BEIR folder holds ``corpus.jsonl`` (``_id``, ``title``, ``text``), ``queries.jsonl`` (``_id``, ``text``)
and ``qrels/<split>.tsv`` (query id, doc id, relevance; header optional). Metrics come from ``ir-measures``:
nDCG@k, Recall@k, Recall@limit, MRR@k (``RR@k``) and MAP@100 (``AP@100``), averaged over every judged query
(a query with no hits counts as 0), for the recall stage and after every rerank stage.

>>> from twostage_integrations.eval import evaluate
>>> report = evaluate("path/to/scifact", recall="hybrid", limit=100, reranker=None)  # doctest: +SKIP
>>> report.stages[-1].metrics["nDCG@10"]  # doctest: +SKIP
0.68...
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .embeddings import Embedder
from .errors import InvalidDocumentError, InvalidParameterError
from .recall.base import Recall
from .recall.chroma import ChromaRecall, default_db_path, make_client
from .rerank.base import BaseReranker, Reranker
from .rerank.cascade import Cascade
from .validation import check_positive_int


# -- data -------------------------------------------------------------------------------------------------
@dataclass
class BeirDataset:
    """A BEIR dataset split: ``corpus`` {doc id: passage text}, ``queries`` {query id: text} (judged ones
    only), ``qrels`` {query id: {doc id: relevance}}."""

    name: str
    path: Path
    split: str
    corpus: dict[str, str]
    titles: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    fingerprint: str = ""


def passage_text(title: str, text: str) -> str:
    """How a BEIR document becomes one passage: ``"<title>. <text>"`` (just the text without a title)."""
    title, text = title.strip(), text.strip()
    return f"{title}. {text}" if title else text


def load_beir(folder: str | os.PathLike[str], split: str = "test", *, max_queries: int | None = None) -> BeirDataset:
    """Read a BEIR folder. ``max_queries`` keeps the first N judged queries (by id order in the qrels)."""
    path = Path(folder).expanduser()
    files = {
        "corpus": path / "corpus.jsonl",
        "queries": path / "queries.jsonl",
        "qrels": path / "qrels" / f"{split}.tsv",
    }
    for what, file in files.items():
        if not file.is_file():
            hint = f" (available splits: {_splits(path)})" if what == "qrels" else ""
            raise InvalidDocumentError(
                f"{file} not found: a BEIR folder needs corpus.jsonl, queries.jsonl and qrels/<split>.tsv{hint}"
            )
    if max_queries is not None:
        check_positive_int(max_queries, "max_queries")
    qrels: dict[str, dict[str, int]] = {}
    with open(files["qrels"], encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            parts = line.rstrip("\n").split("\t")
            if not line.strip() or (lineno == 1 and not parts[-1].lstrip("-").isdigit()):
                continue  # blank line or header
            if len(parts) < 3:
                raise InvalidDocumentError(f"{files['qrels']}:{lineno}: expected 'query-id<TAB>corpus-id<TAB>score'")
            qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    all_queries = {row["_id"]: row["text"] for row in _jsonl(files["queries"])}
    qids = [q for q in qrels if q in all_queries][:max_queries]
    digest = hashlib.sha256()
    corpus: dict[str, str] = {}
    titles: dict[str, str] = {}
    for row in _jsonl(files["corpus"]):
        doc_id = str(row["_id"])
        corpus[doc_id] = passage_text(row.get("title") or "", row.get("text") or "")
        titles[doc_id] = row.get("title") or ""
        digest.update(doc_id.encode() + b"\0" + corpus[doc_id].encode() + b"\0")
    return BeirDataset(
        name=path.name,
        path=path,
        split=split,
        corpus=corpus,
        titles=titles,
        queries={q: all_queries[q] for q in qids},
        qrels={q: qrels[q] for q in qids},
        fingerprint=digest.hexdigest(),
    )


def _splits(path: Path) -> str:
    return ", ".join(sorted(p.stem for p in (path / "qrels").glob("*.tsv"))) or "none"


def _jsonl(file: Path):
    with open(file, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InvalidDocumentError(f"{file}:{lineno}: not valid JSON ({exc.msg})") from exc


# -- indexing ---------------------------------------------------------------------------------------------
def collection_name(dataset: BeirDataset, embedder: Embedder) -> str:
    """Cache key: dataset name + hash of (corpus content, embedding model)."""
    key = hashlib.sha256(f"{dataset.fingerprint}\0{embedder.name}".encode()).hexdigest()[:12]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", dataset.name).strip("-._")[:40] or "dataset"
    return f"beir-{slug}-{key}"


def index_corpus(
    dataset: BeirDataset,
    *,
    db: str | os.PathLike[str] | None = None,
    embedding_model: str | os.PathLike[str] | Embedder | None = None,
    progress: bool = True,
) -> ChromaRecall:
    """The dataset's corpus in an embedded Chroma collection keyed by dataset + embedding model.

    Embeds only what is missing, so re-runs (and interrupted runs) reuse the stored vectors."""
    embedder = embedding_model if isinstance(embedding_model, Embedder) else Embedder(embedding_model)
    client = make_client(path=db if db is not None else default_db_path())
    chroma = ChromaRecall(
        collection_name(dataset, embedder), client=client, embedding_model=embedder, progress=progress
    )
    ids = list(dataset.corpus)
    chroma._get_collection(create=True)  # noqa: SLF001 - create it so count() works on the first run
    if chroma.count() != len(ids):
        chroma.add_texts(
            [dataset.corpus[d] for d in ids], metadatas=[{"title": dataset.titles[d]} for d in ids], ids=ids
        )
    return chroma


class _BatchedQueries:
    """An embedder whose ``embed_query`` serves vectors computed up front in one batch (eval speed)."""

    def __init__(self, embedder: Embedder, queries: Sequence[str], *, progress: bool) -> None:
        self._embedder = embedder
        self._vectors = dict(
            zip(queries, embedder.embed(list(queries), progress=progress, desc="embedding queries"), strict=True)
        )

    def embed_query(self, query: str):
        vector = self._vectors.get(query)
        return vector if vector is not None else self._embedder.embed_query(query)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._embedder, name)


def make_recall(kind: str, chroma: ChromaRecall, **kwargs: Any) -> Recall:
    """``dense``, ``bm25`` or ``hybrid`` over one collection (see :func:`recall_by_kind`)."""
    from .recall.hybrid import recall_by_kind

    return recall_by_kind(kind, chroma, **kwargs)


# -- metrics ----------------------------------------------------------------------------------------------
def metric_names(limit: int, k: int = 10) -> dict[str, str]:
    """Display name -> ir-measures measure."""
    names = {f"nDCG@{k}": f"nDCG@{k}", f"Recall@{k}": f"R@{k}", f"Recall@{limit}": f"R@{limit}"}
    names.update({f"MRR@{k}": f"RR@{k}", "MAP@100": "AP@100"})
    return names


def compute_metrics(
    qrels: Mapping[str, Mapping[str, int]], rankings: Mapping[str, Sequence[str]], *, limit: int, k: int = 10
) -> dict[str, float]:
    """Mean of each measure over every query in ``qrels``; a query missing from ``rankings`` scores 0.

    ``rankings`` maps a query id to doc ids, best first (only the order matters).
    """
    import ir_measures

    names = metric_names(limit, k)
    measures = {ir_measures.parse_measure(m): display for display, m in names.items()}
    qrels_list = [ir_measures.Qrel(q, d, int(r)) for q, docs in qrels.items() for d, r in docs.items()]
    run = [
        ir_measures.ScoredDoc(q, d, float(len(docs) - rank))
        for q, docs in rankings.items()
        if q in qrels
        for rank, d in enumerate(docs)
    ]
    totals = dict.fromkeys(names, 0.0)
    for m in ir_measures.iter_calc(list(measures), qrels_list, run):
        totals[measures[m.measure]] += m.value
    n = max(len(qrels), 1)
    return {name: totals[name] / n for name in names}


# -- evaluation -------------------------------------------------------------------------------------------
@dataclass
class StageReport:
    """One stage's quality and cost. ``seconds`` is the total over all queries; ``qps`` counts this stage
    alone, ``cumulative_qps`` everything up to and including it (what a user of the pipeline would see)."""

    name: str
    metrics: dict[str, float]
    seconds: float
    n_queries: int
    mean_in: float
    mean_out: float
    cumulative_seconds: float

    @property
    def ms_per_query(self) -> float:
        return 1000 * self.seconds / max(self.n_queries, 1)

    @property
    def qps(self) -> float:
        return self.n_queries / self.seconds if self.seconds else float("inf")

    @property
    def cumulative_qps(self) -> float:
        return self.n_queries / self.cumulative_seconds if self.cumulative_seconds else float("inf")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(ms_per_query=self.ms_per_query, qps=self.qps, cumulative_qps=self.cumulative_qps)
        return out


@dataclass
class EvalReport:
    """Everything ``twostage eval`` prints: the configuration and one :class:`StageReport` per stage."""

    dataset: str
    split: str
    recall: str
    limit: int
    top_k: int
    n_queries: int
    n_docs: int
    embedding_model: str
    stages: list[StageReport] = field(default_factory=list)
    index_seconds: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "stages"}
        out["stages"] = [s.to_dict() for s in self.stages]
        return out

    def table(self):
        """A rich ``Table`` of the stages (rows) by metrics and timings (columns)."""
        from rich.table import Table

        table = Table(
            title=f"{self.dataset} ({self.split}, {self.n_queries} queries, {self.n_docs} docs), recall={self.recall}, "
            f"limit={self.limit}",
            title_justify="left",
        )
        table.add_column("stage")
        table.add_column("kept", justify="right")
        names = list(self.stages[0].metrics) if self.stages else []
        for name in names:
            table.add_column(name, justify="right")
        table.add_column("ms/query", justify="right")
        table.add_column("queries/s (cum.)", justify="right")
        for s in self.stages:
            table.add_row(
                s.name,
                f"{s.mean_out:.0f}",
                *(f"{s.metrics[n]:.3f}" for n in names),
                f"{s.ms_per_query:.1f}",
                f"{s.cumulative_qps:.1f}",
            )
        return table


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
    embedding_model: str | os.PathLike[str] | Embedder | None = None,
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
    data = dataset if isinstance(dataset, BeirDataset) else load_beir(dataset, split, max_queries=max_queries)
    if isinstance(dataset, BeirDataset) and max_queries is not None:
        keep = list(data.queries)[:max_queries]
        data = BeirDataset(
            data.name, data.path, data.split, data.corpus, data.titles,
            {q: data.queries[q] for q in keep}, {q: data.qrels[q] for q in keep}, data.fingerprint,
        )  # fmt: skip
    if not data.queries:
        raise InvalidDocumentError(f"{data.path}: no judged queries for split {data.split!r}")
    cascade = _stages(reranker)
    qids = list(data.queries)
    texts = [data.queries[q] for q in qids]

    t0 = time.perf_counter()
    if isinstance(recall, str):
        chroma = index_corpus(data, db=db, embedding_model=embedding_model, progress=progress)
        retriever = make_recall(recall, chroma, rrf_k=rrf_k, candidates_per_arm=candidates_per_arm)
        recall_name = recall
        embedder_name = chroma.embedder.name
    else:
        chroma, retriever, recall_name = None, recall, type(recall).__name__
        embedder_name = getattr(getattr(recall, "embedder", None), "name", "")
    index_seconds = time.perf_counter() - t0

    recall_seconds = 0.0
    if chroma is not None and recall_name in ("dense", "hybrid"):
        t0 = time.perf_counter()
        chroma.embedder = _BatchedQueries(chroma.embedder, texts, progress=progress)
        recall_seconds += time.perf_counter() - t0
    if chroma is not None and recall_name in ("bm25", "hybrid"):
        sparse = retriever if recall_name == "bm25" else retriever.sparse
        sparse.refresh()  # build/load the BM25 index now: setup, not per-query latency

    n_stages = 1 + (len(cascade.stages) if cascade else 0)
    rankings: list[dict[str, list[str]]] = [{} for _ in range(n_stages)]
    seconds = [recall_seconds] + [0.0] * (n_stages - 1)
    sizes: list[list[int]] = [[] for _ in range(n_stages)]
    names = [f"recall ({recall_name})"] + (_stage_names(cascade) if cascade else [])
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


def plot_limits(reports: Sequence[EvalReport], path: str | os.PathLike[str], *, metric: str | None = None) -> Path:
    """nDCG@k (left axis) and end-to-end ms/query (right axis) of the last stage versus ``limit``; PNG/SVG/PDF."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not reports:
        raise InvalidParameterError("nothing to plot: pass at least one report")
    metric = metric or f"nDCG@{reports[0].top_k}"
    limits = [r.limit for r in reports]
    quality = [r.stages[-1].metrics[metric] for r in reports]
    latency = [1000 * r.stages[-1].cumulative_seconds / r.n_queries for r in reports]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(limits, quality, "o-", color="tab:blue", label=metric)
    ax.set_xlabel("limit (candidates recalled)")
    ax.set_ylabel(metric, color="tab:blue")
    ax2 = ax.twinx()
    ax2.plot(limits, latency, "s--", color="tab:red", label="ms/query")
    ax2.set_ylabel("ms per query (all stages)", color="tab:red")
    r0 = reports[0]
    ax.set_title(f"{r0.dataset} {r0.split}: recall={r0.recall}, {r0.stages[-1].name}", fontsize=9)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


# -- comparing many configurations --------------------------------------------------------------------------
class CachedReranker(BaseReranker):
    """Scores each (query, passage) pair once and remembers it, so many configurations can be compared for
    the cost of one. Stage timings of runs that hit the cache are not latencies; ``pairs_scored`` and
    ``seconds_scoring`` give the real cost of the pairs the inner reranker actually scored."""

    def __init__(self, reranker: BaseReranker) -> None:
        self.inner = reranker
        self.name = reranker.name
        self._cache: dict[tuple[str, str], float] = {}
        self.pairs_scored = 0
        self.seconds_scoring = 0.0

    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        missing = list(dict.fromkeys(t for t in texts if (query, t) not in self._cache))
        if missing:
            t0 = time.perf_counter()
            scores = self.inner.score(query, missing)
            self.seconds_scoring += time.perf_counter() - t0
            self.pairs_scored += len(missing)
            self._cache.update(((query, t), s) for t, s in zip(missing, scores, strict=True))
        return [self._cache[(query, t)] for t in texts]
