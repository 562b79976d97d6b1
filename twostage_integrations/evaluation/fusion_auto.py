"""Choose the fusion weight without labels (``fuse=rrf:auto``, ``--fusion-weight auto``).

A reranker trained on another domain can rank worse than recall. Whether it does on *your* corpus can be
estimated without a single judged query: cut the first sentence off sampled passages and use it as a query
whose one relevant passage is the rest of its own passage (the label-free pairs ``twostage finetune --pairs
first-sentence`` trains on). Recall runs over a copy of the collection in which each sampled passage is
replaced by its rest (the query text is in no passage: otherwise recall would find it verbatim and always
win), the reranker scores each query's candidates once, and nDCG@10 is measured for recall alone and for
every fusion weight of a grid. The pick is the best weight; ties go to the smaller weight (closer to recall).

The copy reuses the stored embeddings (only the sampled rests are embedded) and lives in an in-memory Chroma
client with its BM25 index in a temporary folder: nothing is written to the user's database.
"""

from __future__ import annotations

import logging
import math
import random
import re
import tempfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import InvalidParameterError
from ..hit import Hit
from ..recall.base import Recall
from ..rerank.base import Reranker
from ..rerank.fusion import METHODS, fuse_orders

log = logging.getLogger(__name__)

GRID = (0.0, 0.25, 0.5, 0.7, 0.8, 0.9, 1.0)
DEFAULT_SAMPLE = 150  # pseudo-queries: enough to tell 0.01 nDCG apart most of the time, ~7.5k pairs at limit 50
MIN_QUERIES = 20  # below this the estimate is noise: fall back to the fixed default (with a warning)
MAX_POOL = 20_000  # passages copied into the pseudo collection (a seeded sample of larger collections)
FALLBACK_WEIGHT = 0.9  # FusedReranker's (and the spec's) fixed default
K = 10  # nDCG@10
# One sentence ends where ., ! or ? is followed by space and a capital, digit or bracket (finetune.data's rule).
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\[])")


@dataclass(frozen=True)
class PseudoQuery:
    """One label-free query: a passage's first sentence, whose one relevant passage is the rest of it.

    Attributes:
        doc_id: The passage's id.
        query: Its first sentence (of the text after the title).
        passage: What the passage holds in the pseudo collection: title (when there is one) and the rest.
    """

    doc_id: str
    query: str
    passage: str


@dataclass
class FusionEstimate:
    """What :func:`estimate_fusion_weight` measured and picked.

    Attributes:
        method: ``"rrf"`` or ``"minmax"``.
        weight: The pick (the fixed default when ``fallback`` says why).
        recall_ndcg: nDCG@10 of recall alone on the pseudo-queries (None on fallback).
        ndcg: nDCG@10 per weight of the grid, as ``{weight: ndcg}`` (empty on fallback).
        n_queries: Pseudo-queries measured.
        n_passages: Passages in the pseudo collection.
        fallback: Why the fixed default was used instead of an estimate, or None.
        key: What the pick was cached under (collection version, reranker, recall, limit, method).
    """

    method: str
    weight: float
    recall_ndcg: float | None = None
    ndcg: dict[float, float] = field(default_factory=dict)
    n_queries: int = 0
    n_passages: int = 0
    fallback: str | None = None
    key: str = ""

    def summary(self) -> str:
        """One line: the pick and the table (what is logged)."""
        if self.fallback:
            return f"fusion weight auto: {self.method} {self.weight:g} (fixed default: {self.fallback})"
        table = ", ".join(f"{w:g}={v:.3f}" for w, v in self.ndcg.items())
        return (
            f"fusion weight auto: picked {self.method} {self.weight:g} from nDCG@10 on {self.n_queries} pseudo-queries "
            f"(recall alone {self.recall_ndcg:.3f}; {table})"
        )

    def table(self) -> str:
        """The estimate as a small text table (recall alone, each weight, the pick marked)."""
        if self.fallback:
            return self.summary()
        head = f"fusion weight auto ({self.method}): nDCG@10 on {self.n_queries} pseudo-queries"
        lines = [head + f" over {self.n_passages} passages" if self.n_passages else head]
        lines.append(f"  recall alone      {self.recall_ndcg:.4f}")
        for w, v in self.ndcg.items():
            lines.append(f"  weight {w:<10g} {v:.4f}" + ("  <- pick" if w == self.weight else ""))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``ndcg`` as a list of ``{"weight", "ndcg"}`` rows)."""
        out = asdict(self)
        out["ndcg"] = [{"weight": w, "ndcg": v} for w, v in self.ndcg.items()]
        return out


def _split_first_sentence(text: str) -> tuple[str, str]:
    parts = _SENTENCE_END.split(text.strip(), maxsplit=1)
    return (parts[0].strip(), parts[1].strip()) if len(parts) == 2 else (text.strip(), "")


def make_pseudo_query(doc_id: str, text: str, title: str = "") -> PseudoQuery | None:
    """The pseudo-query of one passage, or None when it has no usable first sentence (fewer than 4 words) or
    too little left after it (fewer than 5 words).

    Args:
        doc_id: The passage's id.
        text: The passage as stored (``"<title>. <text>"`` when it has a title, as BEIR corpora are indexed).
        title: Its title, if any (removed from the text before the first sentence is cut).

    Returns:
        The pseudo-query, or None.
    """
    title = title.strip()
    body = text[len(title) + 2 :] if title and text.startswith(f"{title}. ") else text
    sentence, rest = _split_first_sentence(body)
    if len(sentence.split()) < 4 or len(rest.split()) < 5:
        return None
    return PseudoQuery(doc_id, sentence, f"{title}. {rest}" if title else rest)


def pseudo_queries(
    passages: Mapping[str, str], titles: Mapping[str, str] | None = None, *, sample: int = DEFAULT_SAMPLE, seed: int = 0
) -> list[PseudoQuery]:
    """A seeded sample of pseudo-queries from a corpus (passages without one are skipped).

    Args:
        passages: Passage text by id.
        titles: Titles by id (optional).
        sample: How many at most.
        seed: The sampling seed.

    Returns:
        Up to ``sample`` pseudo-queries, in a seeded random order.
    """
    ids = sorted(passages)
    random.Random(seed).shuffle(ids)
    out: list[PseudoQuery] = []
    for doc_id in ids:
        pseudo = make_pseudo_query(doc_id, passages[doc_id], (titles or {}).get(doc_id, ""))
        if pseudo is not None:
            out.append(pseudo)
            if len(out) >= sample:
                break
    return out


def ndcg_at(ranking: Sequence[str], relevant: str, k: int = K) -> float:
    """nDCG@k with one relevant document: ``1 / log2(1 + rank)`` when it is in the top ``k``, else 0."""
    for rank, doc_id in enumerate(ranking[:k], 1):
        if doc_id == relevant:
            return 1.0 / math.log2(1 + rank)
    return 0.0


def pick_weight(ndcg: Mapping[float, float]) -> float:
    """The weight with the best nDCG; ties go to the smaller weight (closer to recall's order).

    Args:
        ndcg: nDCG by weight.

    Returns:
        The weight.
    """
    best = max(ndcg.values())
    return min(w for w, v in ndcg.items() if v >= best - 1e-12)


@dataclass
class PseudoRun:
    """One pseudo-query's recall hits and the reranker's order of them (the reranker's scores, unfused)."""

    query: PseudoQuery
    hits: list[Hit]
    reranked: list[Hit]


def run_pseudo_queries(
    recall: Recall, reranker: Reranker, queries: Sequence[PseudoQuery], limit: int
) -> list[PseudoRun]:
    """Recall ``limit`` candidates per pseudo-query and rerank them once (every weight reuses the scores).

    Args:
        recall: Stage 1 over the pseudo collection (see :func:`pseudo_recall`).
        reranker: Stage 2, unfused; for a cascade, the last stage is fused with the hits the stages before it
            kept.
        queries: The pseudo-queries.
        limit: Candidates per query.

    Returns:
        One run per query.
    """
    from ..rerank.cascade import Cascade

    runs = []
    for q in queries:
        hits = recall.search(q.query, limit)
        if not hits:
            runs.append(PseudoRun(q, [], []))
        elif isinstance(reranker, Cascade) and len(reranker.stages) > 1:  # fuse the last stage with its input
            outputs = reranker.run(q.query, hits)
            runs.append(PseudoRun(q, outputs[-2].hits, outputs[-1].hits))
        else:
            runs.append(PseudoRun(q, hits, reranker.rerank(q.query, hits, None)))
    return runs


def estimate_from_runs(runs: Sequence[PseudoRun], method: str = "rrf", grid: Sequence[float] = GRID) -> FusionEstimate:
    """nDCG@10 of recall alone and of each weight of ``grid`` over pseudo-query runs, and the pick.

    Args:
        runs: What :func:`run_pseudo_queries` returned.
        method: ``"rrf"`` or ``"minmax"``.
        grid: The weights to try (0..1).

    Returns:
        The estimate (``n_passages`` left 0 for the caller).

    Raises:
        InvalidParameterError: An unknown method, an empty grid or a weight outside 0..1.
    """
    if method not in METHODS:
        raise InvalidParameterError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if not grid or any(not 0.0 <= w <= 1.0 for w in grid):
        raise InvalidParameterError(f"grid must hold weights between 0 and 1, got {list(grid)!r}")
    n = max(len(runs), 1)
    recall_ndcg = sum(ndcg_at([h.id for h in r.hits], r.query.doc_id) for r in runs) / n
    table: dict[float, float] = {}
    for w in sorted(set(float(x) for x in grid)):
        total = 0.0
        for r in runs:
            if r.hits:
                fused = fuse_orders(r.hits, r.reranked, None, weight=w, method=method)
                total += ndcg_at([h.id for h in fused], r.query.doc_id)
        table[w] = total / n
    return FusionEstimate(method, pick_weight(table), recall_ndcg, table, len(runs))


def estimate_fusion_weight(
    recall: Recall,
    reranker: Reranker,
    queries: Sequence[PseudoQuery],
    *,
    limit: int,
    method: str = "rrf",
    grid: Sequence[float] = GRID,
    min_queries: int = MIN_QUERIES,
) -> FusionEstimate:
    """Measure recall alone and each fusion weight on pseudo-queries, and pick the weight.

    Args:
        recall: Stage 1 over the pseudo collection (each query's own passage holds only the rest of it).
        reranker: Stage 2, unfused.
        queries: The pseudo-queries (see :func:`pseudo_queries`).
        limit: Candidates per query (the pipeline's recall limit).
        method: ``"rrf"`` or ``"minmax"``.
        grid: The weights to try.
        min_queries: Fewer pseudo-queries than this: the fixed default 0.9, with a warning and the reason in
            ``fallback``.

    Returns:
        The estimate.
    """
    if len(queries) < min_queries:
        reason = (
            f"only {len(queries)} passages yield a pseudo-query (a first sentence of 4+ words and 5+ words after "
            f"it); {min_queries} are needed"
        )
        log.warning("fusion weight auto: using the fixed default %g: %s", FALLBACK_WEIGHT, reason)
        return FusionEstimate(method, FALLBACK_WEIGHT, n_queries=len(queries), fallback=reason)
    estimate = estimate_from_runs(run_pseudo_queries(recall, reranker, queries, limit), method, grid)
    log.info("%s", estimate.summary())
    return estimate


# -- the pseudo collection -------------------------------------------------------------------------------------
def _chroma_of(recall: Recall) -> Any:
    """The :class:`ChromaRecall` a dense, BM25 or hybrid recall reads."""
    from ..recall.bm25 import BM25Recall
    from ..recall.chroma import ChromaRecall
    from ..recall.hybrid import HybridRecall

    if isinstance(recall, ChromaRecall):
        return recall
    if isinstance(recall, BM25Recall):
        return recall.chroma
    if isinstance(recall, HybridRecall):
        return _chroma_of(recall.dense)
    raise InvalidParameterError(
        f"fusion weight auto needs a recall over a Chroma collection (dense, bm25 or hybrid), got "
        f"{type(recall).__name__}; pass a number instead"
    )


def _mirror(recall: Recall, copy: Any, index_dir: str) -> Recall:
    """``recall``'s kind and settings over the pseudo collection ``copy``."""
    from ..recall.bm25 import BM25Recall
    from ..recall.hybrid import HybridRecall

    if isinstance(recall, HybridRecall):
        dense, sparse = _mirror(recall.dense, copy, index_dir), _mirror(recall.sparse, copy, index_dir)
        weights = (float(recall.weights[0]), float(recall.weights[1]))
        return HybridRecall(dense, sparse, k=recall.k, candidates_per_arm=recall.candidates_per_arm, weights=weights)
    if isinstance(recall, BM25Recall):
        stemmer, k1, b = recall.stemmer_language, recall.k1, recall.b
        return BM25Recall(copy, index_dir=index_dir, stopwords=recall.stopwords, stemmer=stemmer, k1=k1, b=b)
    return copy


def read_pool(chroma: Any, *, max_pool: int = MAX_POOL, seed: int = 0) -> dict[str, Any]:
    """The passages of a collection the pseudo collection is made of: all of them, or a seeded sample of
    ``max_pool`` for larger collections.

    Returns:
        ``{"ids", "documents", "metadatas", "embeddings"}`` lists.
    """
    collection = chroma.collection
    ids = collection.get(include=[])["ids"]
    if len(ids) > max_pool:
        ids = sorted(random.Random(seed).sample(sorted(ids), max_pool))
    out: dict[str, list[Any]] = {"ids": [], "documents": [], "metadatas": [], "embeddings": []}
    for start in range(0, len(ids), 1000):
        got = collection.get(ids=ids[start : start + 1000], include=["documents", "metadatas", "embeddings"])
        out["ids"] += got["ids"]
        out["documents"] += list(got["documents"])
        out["metadatas"] += [m or {} for m in got["metadatas"]]
        out["embeddings"] += list(got["embeddings"])
    return out


@contextmanager
def pseudo_recall(recall: Recall, pool: Mapping[str, Any], queries: Sequence[PseudoQuery]) -> Iterator[Recall]:
    """``recall``'s kind over an in-memory copy of ``pool`` in which each pseudo-query's passage holds only the
    rest of it (embedded with the collection's embedder; the others keep their stored vectors).

    Args:
        recall: The user's recall (dense, bm25 or hybrid over Chroma).
        pool: What :func:`read_pool` returned.
        queries: The pseudo-queries.

    Yields:
        The mirrored recall; the copy is dropped on exit.
    """
    import chromadb

    from ..recall.chroma import ChromaRecall

    chroma = _chroma_of(recall)
    client = chromadb.EphemeralClient()
    copy = ChromaRecall(f"twostage-fusion-auto-{uuid.uuid4().hex[:12]}", client=client, embedding_model=chroma.embedder)
    replaced = {q.doc_id: q.passage for q in queries}
    vectors = dict(zip(replaced, chroma.embedder.embed(list(replaced.values())), strict=True)) if replaced else {}
    rows = list(zip(pool["ids"], pool["documents"], pool["metadatas"], pool["embeddings"], strict=True))
    collection = copy._get_collection(create=True)
    try:
        for start in range(0, len(rows), 1000):
            batch = rows[start : start + 1000]
            collection.add(
                ids=[r[0] for r in batch],
                documents=[replaced.get(r[0], r[1]) for r in batch],
                metadatas=[r[2] or None for r in batch],
                embeddings=[vectors.get(r[0], r[3]) for r in batch],
            )
        with tempfile.TemporaryDirectory(prefix="twostage-fusion-auto-") as index_dir:
            yield _mirror(recall, copy, index_dir)
    finally:
        client.delete_collection(copy.name)


# -- choosing, caching, applying -------------------------------------------------------------------------------
_PICKS: dict[str, FusionEstimate] = {}  # this process's picks, by key


def _recall_label(recall: Recall) -> str:
    """The recall's kind and settings, as part of the cache key."""
    from ..recall.bm25 import BM25Recall
    from ..recall.hybrid import HybridRecall

    if isinstance(recall, HybridRecall):
        inner = f"{_recall_label(recall.dense)},{_recall_label(recall.sparse)}"
        return f"hybrid(k={recall.k:g},per_arm={recall.candidates_per_arm},{inner})"
    if isinstance(recall, BM25Recall):
        return f"bm25({recall.stopwords},{recall.stemmer_language},{recall.k1:g},{recall.b:g})"
    return "dense"


def _reranker_label(reranker: Reranker) -> str:
    stages = getattr(reranker, "stages", None)
    if stages:
        return " > ".join(f"{_reranker_label(r)}:{k}" for r, k in stages)
    backend = getattr(reranker, "backend", None)
    return f"{getattr(reranker, 'name', type(reranker).__name__)}" + (f"[{backend}]" if backend else "")


def picks_file(chroma: Any) -> Any:
    """Where picks for a collection are kept across processes: ``<database>/fusion_auto/<collection>.json``,
    beside the collection's BM25 index folder (``<database>/bm25/<collection>``)."""
    from ..recall.bm25 import _default_index_dir

    return _default_index_dir(chroma).parent.parent / "fusion_auto" / f"{chroma.name}.json"


def _load_pick(path: Any, key: str) -> FusionEstimate | None:
    import json

    try:
        row = json.loads(path.read_text(encoding="utf-8")).get(key)
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(row, dict):
        return None
    try:
        row["ndcg"] = {float(r["weight"]): float(r["ndcg"]) for r in row.get("ndcg", [])}
        return FusionEstimate(**row)
    except (TypeError, KeyError, ValueError):
        return None  # an older or hand-edited file: estimate again


def _save_pick(path: Any, key: str, estimate: FusionEstimate) -> None:
    import json

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            rows = {}
        rows = rows if isinstance(rows, dict) else {}
        rows[key] = estimate.to_dict()
        path.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    except OSError as exc:  # a read-only database still gets its pick, just not kept for the next process
        log.warning("fusion weight auto: could not keep the pick in %s (%s)", path, exc)


def choose_fusion_weight(
    recall: Recall,
    reranker: Reranker,
    *,
    limit: int,
    method: str = "rrf",
    sample: int = DEFAULT_SAMPLE,
    seed: int = 0,
    grid: Sequence[float] = GRID,
    persist: bool = True,
) -> FusionEstimate:
    """The fusion weight for ``reranker`` after ``recall`` on the recall's own collection, without labels:
    cached per (collection version, reranker, recall, limit, method, sample, seed) for the process and, with
    ``persist``, in :func:`picks_file` for later processes (a write to the collection changes its version, so
    the next call estimates again).

    Args:
        recall: Stage 1 (dense, bm25 or hybrid over a Chroma collection).
        reranker: Stage 2, unfused (the stages before the fused one included, as a cascade).
        limit: Candidates recalled per query.
        method: ``"rrf"`` or ``"minmax"``.
        sample: Pseudo-queries to build.
        seed: The sampling seed.
        grid: Weights to try.
        persist: Keep the pick beside the collection's BM25 index.

    Returns:
        The estimate; ``weight`` is the pick.

    Raises:
        InvalidParameterError: A recall that does not read a Chroma collection.
        CollectionNotFoundError: The collection does not exist.
    """
    chroma = _chroma_of(recall)
    count, stamp = chroma.version()
    parts = [chroma.name, str(count), stamp, _reranker_label(reranker), _recall_label(recall), str(limit), method]
    key = "|".join([*parts, f"sample={sample}", f"seed={seed}", "grid=" + ",".join(f"{w:g}" for w in grid)])
    path = picks_file(chroma) if persist else None
    cached = _PICKS.get(key) or (_load_pick(path, key) if path is not None else None)
    if cached is not None:
        _PICKS[key] = cached
        log.info("%s [cached]", cached.summary())
        return cached
    pool = read_pool(chroma, seed=seed)
    titles = {i: str((m or {}).get("title") or "") for i, m in zip(pool["ids"], pool["metadatas"], strict=True)}
    queries = pseudo_queries(dict(zip(pool["ids"], pool["documents"], strict=True)), titles, sample=sample, seed=seed)
    if len(queries) < MIN_QUERIES:
        estimate = estimate_fusion_weight(recall, reranker, queries, limit=limit, method=method, grid=grid)
    else:
        with pseudo_recall(recall, pool, queries) as mirrored:
            estimate = estimate_fusion_weight(mirrored, reranker, queries, limit=limit, method=method, grid=grid)
    estimate.n_passages, estimate.key = len(pool["ids"]), key
    _PICKS[key] = estimate
    if path is not None:
        _save_pick(path, key, estimate)
    return estimate


def apply_auto_fusion(
    reranker: Reranker | None, recall: Recall, *, limit: int, **options: Any
) -> FusionEstimate | None:
    """Choose the weight of a fused last stage whose weight is ``"auto"`` (what a spec's ``fuse=METHOD:auto``
    builds) and set it; anything else is left alone.

    Args:
        reranker: A :class:`~twostage_integrations.rerank.cascade.Cascade` or fused reranker (None: no rerank).
        recall: Stage 1 over the collection.
        limit: Candidates recalled per query.
        **options: :func:`choose_fusion_weight`'s ``sample``, ``seed``, ``grid``, ``persist``.

    Returns:
        The estimate, or None when there was no ``"auto"`` weight to choose.
    """
    from ..rerank.cascade import Cascade
    from ..rerank.fusion import AUTO, FusedReranker

    stages = list(reranker.stages) if isinstance(reranker, Cascade) else [(reranker, None)]
    fused = stages[-1][0]
    if not isinstance(fused, FusedReranker) or fused.weight != AUTO:
        return None
    inner: Reranker = fused.reranker
    if len(stages) > 1:  # the fused stage reranks what the stages before it kept: estimate on that
        inner = Cascade([*stages[:-1], (fused.reranker, None)])
    estimate = choose_fusion_weight(recall, inner, limit=limit, method=fused.method, **options)
    fused.set_weight(estimate.weight)
    if isinstance(reranker, Cascade):
        reranker.name = " → ".join(_stage_name(r, k) for r, k in reranker.stages)
    return estimate


def _stage_name(reranker: Reranker, keep: int | None) -> str:
    return getattr(reranker, "name", type(reranker).__name__) + (f"[{keep}]" if keep is not None else "")
