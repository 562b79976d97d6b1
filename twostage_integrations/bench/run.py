"""Speed of the two-stage pipeline next to the same pipeline built natively in LangChain and LlamaIndex.

Every system reads ONE embedded Chroma collection (built once), embeds queries with the same
all-MiniLM-L6-v2 weights and reranks with the same cross-encoder weights, in the same process. Queries
are timed one at a time with the system order rotated per query, so CPU frequency drift and background
load hit every system alike. Because the models are the same, every system should return the same top-k
ids as ``twostage``; the report says for how many queries it does (``agreement``) and shows the first
mismatches.

Systems (:data:`SYSTEMS`):

- ``twostage``: :meth:`TwoStagePipeline.search` (the reference for agreement), with the cross-encoder engine
  ``rerank_backend`` picks (default: ONNX Runtime fp32 when the onnx extra is installed, else torch).
- ``twostage-torch`` / ``twostage-onnx`` / ``twostage-onnx-int8``: the same pipeline with that engine forced.
- ``twostage-langchain`` / ``twostage-llamaindex``: our pipeline through our LangChain / LlamaIndex retrievers.
- ``langchain``: ``langchain_chroma.Chroma(...).as_retriever(search_kwargs={"k": limit})`` inside a
  ``ContextualCompressionRetriever`` with ``CrossEncoderReranker(model=HuggingFaceCrossEncoder(...))``.
- ``llamaindex``: ``VectorStoreIndex.from_vector_store(ChromaVectorStore(...)).as_retriever(similarity_top_k=limit)``
  then ``SentenceTransformerRerank(model=..., top_n=top_k)``.
- ``langchain+twostage-compressor`` / ``llamaindex+twostage-rerank``: the native retriever with our
  stage 2 (:class:`TwoStageCompressor` / :class:`TwoStageRerank`) as the drop-in replacement.
- ``twostage-cascade`` (:data:`CASCADE`, only with ``stages``): the same recall as ``twostage``, reranked by a
  :class:`~twostage_integrations.rerank.cascade.Cascade` of the ``stages`` cross-encoders (a cheap one keeps
  KEEP, a strong one orders those). Its top-k is expected to differ somewhat from ``twostage``'s.

Needs the ``bench`` extra: ``pip install "twostage-integrations[bench]"``.

>>> from twostage_integrations.bench import run_benchmark
>>> report = run_benchmark(max_queries=10, rerank_model="path/to/cross-encoder")  # doctest: +SKIP
>>> {s.name: round(s.median_ms) for s in report.systems}  # doctest: +SKIP
{'twostage': 210, 'langchain': 214, ...}
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import random
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from ..embeddings import BaseEmbedder, as_embedder
from ..errors import InvalidParameterError
from ..hit import Hit
from ..pipeline import TwoStagePipeline
from ..recall.chroma import ChromaRecall, make_client
from ..rerank.cascade import STAGE_OPTIONS, Cascade, StageOutput
from ..rerank.cross_encoder import CrossEncoderReranker
from ..rerank.onnx import resolve_backend
from ..validation import check_limit_top_k, check_positive_int

REFERENCE = "twostage"
SYSTEMS: dict[str, str] = {
    "twostage": "TwoStagePipeline.search",
    "twostage-torch": "TwoStagePipeline.search, cross-encoder on torch (sentence-transformers)",
    "twostage-onnx": "TwoStagePipeline.search, cross-encoder on ONNX Runtime fp32",
    "twostage-onnx-int8": "TwoStagePipeline.search, cross-encoder on ONNX Runtime int8 (opt-in)",
    "twostage-langchain": "our LangChain TwoStageRetriever.from_chroma(...).invoke",
    "twostage-llamaindex": "our LlamaIndex TwoStageRetriever.from_vector_store(...).retrieve",
    "langchain": "native: Chroma.as_retriever + ContextualCompressionRetriever(CrossEncoderReranker("
    "HuggingFaceCrossEncoder))",
    "llamaindex": "native: VectorStoreIndex(ChromaVectorStore).as_retriever + SentenceTransformerRerank",
    "langchain+twostage-compressor": "native LangChain retriever + ContextualCompressionRetriever(TwoStageCompressor)",
    "llamaindex+twostage-rerank": "native LlamaIndex retriever + TwoStageRerank postprocessor",
}
CASCADE = "twostage-cascade"  # not in SYSTEMS: it runs only when stages are given
# A cascade stage: a model, (model, keep) or (model, keep, {"backend": ..., "max_length": ...}).
StageArg = str | os.PathLike[str] | tuple[str | os.PathLike[str], int | None] | tuple[Any, int | None, dict[str, Any]]
NATIVE = ("langchain", "llamaindex")
ENGINE_SYSTEMS = {"twostage-torch": "torch", "twostage-onnx": "onnx", "twostage-onnx-int8": "onnx-int8"}
PACKAGES = (
    "torch",
    "onnxruntime",
    "sentence-transformers",
    "chromadb",
    "langchain-core",
    "langchain-chroma",
    "langchain-classic",
    "langchain-community",
    "llama-index-core",
    "llama-index-vector-stores-chroma",
)


# -- results ------------------------------------------------------------------------------------------------
@dataclass
class SystemResult:
    """Timings and top-k ids of one system. ``latencies_ms`` has ``repeat`` entries per query;
    ``recall_ms``/``rerank_ms`` (our pipeline only) the stage split of the same calls."""

    name: str
    description: str
    rerank_max_length: int | None = None
    latencies_ms: list[float] = field(default_factory=list)
    recall_ms: list[float] = field(default_factory=list)
    rerank_ms: list[float] = field(default_factory=list)
    top_ids: list[list[str]] = field(default_factory=list)
    agreement: float | None = None
    mismatches: list[dict[str, Any]] = field(default_factory=list)
    backend: str | None = None  # our cross-encoder engine; None for the native stacks
    pairs: int = 0  # (query, passage) pairs reranked in the timed calls
    truncated: int | None = None  # of those, pairs cut at the token limit (our engines count; natives do not)
    tokens: int | None = None  # real (unpadded) tokens of the pairs, for the FLOP estimate
    engine_s: float | None = None  # seconds inside our engine (tokenising + forward passes)
    # twostage-cascade only: each stage's model and keep, and its seconds per call (ms, one list per stage)
    cascade: list[dict[str, Any]] = field(default_factory=list)
    cascade_ms: list[list[float]] = field(default_factory=list)
    model_shape: dict[str, int] | None = None  # None: the report's (the reference cross-encoder's)

    @property
    def pairs_per_s(self) -> float:
        """Reranked pairs per second of end-to-end query time (recall included, so every stack is comparable)."""
        return self.pairs / (float(np.sum(self.latencies_ms)) / 1000.0)

    @property
    def median_ms(self) -> float:
        return float(np.median(self.latencies_ms))

    @property
    def p95_ms(self) -> float:
        return float(np.percentile(self.latencies_ms, 95))

    @property
    def queries_per_s(self) -> float:
        return 1000.0 * len(self.latencies_ms) / float(np.sum(self.latencies_ms))

    @property
    def p50_ms(self) -> float:
        return self.median_ms

    def stage_medians_ms(self) -> dict[str, float] | None:
        """Median ms of recall and rerank; for ``twostage-cascade`` also of each stage (``rerank 1``, ...)."""
        if not self.recall_ms:
            return None
        out = {"recall": float(np.median(self.recall_ms)), "rerank": float(np.median(self.rerank_ms))}
        out.update({f"rerank {i}": float(np.median(ms)) for i, ms in enumerate(self.cascade_ms, 1) if ms})
        return out


@dataclass
class BenchReport:
    """What :func:`run_benchmark` measured; ``to_dict()`` is what ``twostage bench --json`` writes."""

    dataset: str
    n_docs: int
    n_queries: int
    limit: int
    top_k: int
    repeat: int
    warmup: int
    embedding_model: str
    rerank_model: str
    build_s: float
    systems: list[SystemResult]
    machine: dict[str, Any] = field(default_factory=dict)
    rerank_backend: str | None = None  # the engine of the ``twostage`` reference
    model_shape: dict[str, int] = field(default_factory=dict)  # layers, hidden, intermediate (for FLOPs)
    # Serve throughput (8 concurrent clients, batching on/off) from bench/serve.py's
    # run_serve_benchmark(...), attached by whoever runs it; printed under the table when set.
    serve: dict[str, Any] | None = None

    def gflops(self, s: SystemResult) -> float | None:
        """Achieved GFLOP/s of ``s``'s cross-encoder: useful FLOPs (unpadded tokens) over engine seconds (None for
        a cascade whose models differ in shape: one estimate cannot cover them)."""
        shape = self.model_shape if s.model_shape is None else s.model_shape
        if not s.tokens or not s.engine_s or not shape:
            return None
        return flops(shape, s.tokens, s.pairs) / s.engine_s / 1e9

    def peak_share(self, s: SystemResult) -> float | None:
        """:meth:`gflops` over this machine's measured fp32 matmul peak (int8 can exceed 1)."""
        g, peak = self.gflops(s), self.machine.get("matmul_peak_gflops")
        return g / peak if g is not None and peak else None

    def system(self, name: str) -> SystemResult:
        for s in self.systems:
            if s.name == name:
                return s
        raise KeyError(name)

    def ratio(self, name: str, baseline: str) -> float | None:
        """``name``'s median latency over ``baseline``'s (below 1: faster); None if either was not run."""
        names = {s.name for s in self.systems}
        if name not in names or baseline not in names:
            return None
        return self.system(name).median_ms / self.system(baseline).median_ms

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "systems"}
        out["systems"] = [
            {
                "name": s.name,
                "description": s.description,
                "rerank_max_length": s.rerank_max_length,
                "median_ms": s.median_ms,
                "p95_ms": s.p95_ms,
                "queries_per_s": s.queries_per_s,
                "stage_median_ms": s.stage_medians_ms(),
                "cascade": s.cascade or None,
                "ratio_vs": {b: self.ratio(s.name, b) for b in (REFERENCE, *NATIVE)},
                "agreement": s.agreement,
                "mismatches": s.mismatches,
                "backend": s.backend,
                "pairs": s.pairs,
                "pairs_per_s": s.pairs_per_s,
                "truncated": s.truncated,
                "gflops": self.gflops(s),
                "peak_share": self.peak_share(s),
                "latencies_ms": s.latencies_ms,
                "top_ids": s.top_ids,
            }
            for s in self.systems
        ]
        return out


# -- data ---------------------------------------------------------------------------------------------------
@dataclass
class BenchData:
    name: str
    ids: list[str]
    texts: list[str]
    queries: list[tuple[str, str]]  # (query id, text), in the order they are run


def load_bench_data(
    dataset_dir: str | os.PathLike[str] | None = None,
    *,
    max_queries: int = 50,
    max_docs: int | None = None,
    seed: int = 13,
) -> BenchData:
    """The bundled sample corpus and demo queries (cycled up to ``max_queries``), or a BEIR folder's test
    split. ``max_docs`` keeps a seeded random subset; for BEIR it keeps every relevant document of the chosen
    queries first and fills up with seeded distractors."""
    check_positive_int(max_queries, "max_queries")
    if max_docs is not None:
        check_positive_int(max_docs, "max_docs")
    if dataset_dir is None:
        from ..demo import DEMO_QUERIES, load_sample_corpus

        rows = load_sample_corpus()
        corpus = {r["id"]: r["text"] for r in rows}
        queries = [(f"demo-{i % len(DEMO_QUERIES)}", DEMO_QUERIES[i % len(DEMO_QUERIES)]) for i in range(max_queries)]
        keep = list(corpus)
        if max_docs is not None:
            keep = sorted(random.Random(seed).sample(keep, min(max_docs, len(keep))))
        return BenchData("sample corpus", keep, [corpus[d] for d in keep], queries)
    from ..evaluation.beir import load_beir

    data = load_beir(dataset_dir, "test", max_queries=max_queries)
    if max_docs is not None:
        data = data.subset(max_docs, seed=seed)
    keep = list(data.corpus)
    return BenchData(f"{data.name} ({data.split})", keep, [data.corpus[d] for d in keep], list(data.queries.items()))


def build_collection(data: BenchData, embedder: BaseEmbedder, db: str | os.PathLike[str], *, progress: bool = True):
    """The shared collection (ids and texts, no metadata, so every stack reranks exactly the same text).
    Named after a hash of the content and the embedding model, so a kept ``db`` is reused on later runs."""
    digest = hashlib.sha256(embedder.name.encode())
    for doc_id, text in zip(data.ids, data.texts, strict=True):
        digest.update(doc_id.encode() + b"\0" + text.encode() + b"\0")
    client = make_client(path=db)
    recall = ChromaRecall(
        f"bench-{digest.hexdigest()[:16]}", client=client, embedding_model=embedder, progress=progress
    )
    recall.add_texts(data.texts, ids=data.ids)
    return client, recall.collection


# -- systems ------------------------------------------------------------------------------------------------
def check_systems(names: Sequence[str] | None, *, cascade: bool = False) -> list[str]:
    """The systems to run, ``twostage`` first (it is the agreement reference); default: all of :data:`SYSTEMS`.
    ``cascade``: stages were given, so :data:`CASCADE` runs too (added if ``names`` lacks it); without stages,
    naming it is an error."""
    if isinstance(names, (str, bytes)):
        raise InvalidParameterError(f"systems must be a list of system names, got the string {names!r}")
    if not cascade and names and CASCADE in names:
        raise InvalidParameterError(
            f"{CASCADE} times a cascade of rerankers and needs its stages: pass --stage MODEL[:KEEP] once per stage "
            f"(stages=[(model, keep), ...] in Python), or drop {CASCADE} from --systems"
        )
    names = list(dict.fromkeys([REFERENCE, *(names or SYSTEMS), *([CASCADE] if cascade else [])]))
    known = [*SYSTEMS, CASCADE] if cascade else list(SYSTEMS)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise InvalidParameterError(f"unknown system(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    return names


def check_stages(
    stages: Sequence[StageArg] | None,
    limits: Sequence[int],
    top_k: int,
) -> list[tuple[str, int | None, dict[str, Any]]]:
    """``stages`` as ``(model, keep, options)`` (a bare model keeps all it gets; ``options``: ``backend``,
    ``max_length`` of that stage's cross-encoder, may be left out), checked against every limit: a stage
    cannot keep more candidates than recall gives it (KEEP <= limit) nor fewer than the top_k ids every
    system returns (KEEP >= top_k). ``None``: no cascade, ``[]``."""
    if stages is None:
        return []
    if isinstance(stages, (str, bytes)) or not stages:
        raise InvalidParameterError(f"stages must be a non-empty list of (model, keep) pairs, got {stages!r}")
    out: list[tuple[str, int | None, dict[str, Any]]] = []
    for i, stage in enumerate(stages, 1):
        model, keep, *rest = stage if isinstance(stage, tuple) else (stage, None)
        options = dict(rest[0]) if rest else {}
        unknown = sorted(set(options) - set(STAGE_OPTIONS))
        if unknown:
            raise InvalidParameterError(f"cascade stage {i} ({model}): unknown option(s) {', '.join(unknown)}")
        if keep is not None:
            label = f"cascade stage {i} ({model}:{keep})"
            check_positive_int(keep, f"keep of {label}")
            if keep > min(limits):
                raise InvalidParameterError(
                    f"{label} keeps {keep} candidates but --limit {min(limits)} recalls only {min(limits)}: "
                    f"pass KEEP <= {min(limits)} or raise --limit"
                )
            if keep < top_k:
                raise InvalidParameterError(
                    f"{label} keeps {keep} candidates but every system returns --top-k {top_k}: "
                    f"pass KEEP >= {top_k} or lower --top-k"
                )
        out.append((str(model), keep, options))
    return out


class _TimedCascade(Cascade):
    """A :class:`Cascade` that keeps its last run's stage outputs (the per-stage timings of the bench)."""

    last_run: list[StageOutput]

    def rerank(self, query: str, hits: Sequence[Hit], top_k: int | None = None) -> list[Hit]:
        self.last_run = self.run(query, hits, top_k)
        return self.last_run[-1].hits


@dataclass
class _System:
    search: Callable[[str], list[str]]  # query -> top-k ids
    pipeline: TwoStagePipeline | None = None  # ours: where the stage split comes from
    rerank_max_length: int | None = None
    reranker: CrossEncoderReranker | None = None  # ours: where pair, truncation and token counts come from
    cascade: _TimedCascade | None = None  # twostage-cascade: its stages' rerankers count instead of ``reranker``
    description: str | None = None  # None: SYSTEMS' line

    def engines(self) -> list[CrossEncoderReranker]:
        """Our cross-encoders this system runs, each once (a cascade may use one model in two stages)."""
        if self.cascade is not None:
            unique = {id(r): r for r, _ in self.cascade.stages if isinstance(r, CrossEncoderReranker)}
            return list(unique.values())
        return [self.reranker] if self.reranker is not None else []


def _top_ids(pipe: TwoStagePipeline) -> Callable[[str], list[str]]:
    return lambda q: [h.id for h in pipe.search(q)]


def _max_length(model: Any) -> int | None:
    return getattr(model, "max_seq_length", None) or getattr(model, "max_length", None)


def make_systems(
    names: Sequence[str],
    *,
    client: Any,
    collection: Any,
    embedder: BaseEmbedder,
    reranker: CrossEncoderReranker,
    limit: int,
    top_k: int,
    rerank_max_length: int | None = None,
    engines: dict[str, CrossEncoderReranker] | None = None,
    cascade: Sequence[tuple[CrossEncoderReranker, int | None]] | None = None,
) -> dict[str, _System]:
    """Build each system the way its users would. ``rerank_max_length`` (None: each stack's default) is set
    on every cross-encoder; LlamaIndex's ``SentenceTransformerRerank`` hard-codes 512 tokens and has no
    argument for it, so there it is set on the loaded model. ``engines``: the cross-encoder of each
    ``twostage-<backend>`` system (see :data:`ENGINE_SYSTEMS`). ``cascade``: the ``(reranker, keep)`` stages of
    :data:`CASCADE` (which then runs)."""
    names = check_systems(names, cascade=bool(cascade))
    pipeline = TwoStagePipeline(
        ChromaRecall(collection, client=client, embedding_model=embedder), reranker, limit=limit, top_k=top_k
    )
    systems: dict[str, _System] = {}
    ours_len = _max_length(reranker.model)
    if "twostage" in names:
        systems["twostage"] = _System(_top_ids(pipeline), pipeline, ours_len, reranker)
    for name in ENGINE_SYSTEMS:
        if name in names:
            engine = (engines or {})[name]
            pipe = TwoStagePipeline(pipeline.recall, engine, limit=limit, top_k=top_k)
            systems[name] = _System(_top_ids(pipe), pipe, _max_length(engine.model), engine)
    if cascade:
        check_stages([(r.name, keep) for r, keep in cascade], [limit], top_k)  # keeps only; engines are built
        chain = _TimedCascade(list(cascade))
        pipe = TwoStagePipeline(pipeline.recall, chain, limit=limit, top_k=top_k)
        last = cascade[-1][0]
        description = f"TwoStagePipeline.search, reranked by Cascade({chain.name}) (same recall as twostage)"
        systems[CASCADE] = _System(_top_ids(pipe), pipe, _max_length(last.model), last, chain, description)
    if any("langchain" in n for n in names):
        systems.update(
            _langchain_systems(names, client, collection, embedder, reranker, limit, top_k, rerank_max_length)
        )
    if any("llamaindex" in n for n in names):
        systems.update(_llamaindex_systems(names, collection, embedder, reranker, limit, top_k, rerank_max_length))
    return {n: systems[n] for n in names}


def _langchain_systems(names, client, collection, embedder, reranker, limit, top_k, rerank_max_length):
    from langchain_chroma import Chroma
    from langchain_classic.retrievers import ContextualCompressionRetriever
    from langchain_classic.retrievers.document_compressors import CrossEncoderReranker

    from ..langchain import TwoStageCompressor, TwoStageEmbeddings, TwoStageRetriever

    with warnings.catch_warnings():  # langchain-community warns on import that it is being sunset
        warnings.simplefilter("ignore", DeprecationWarning)
        from langchain_community.cross_encoders import HuggingFaceCrossEncoder

    store = Chroma(client=client, collection_name=collection.name, embedding_function=TwoStageEmbeddings(embedder))
    base = store.as_retriever(search_kwargs={"k": limit})
    out: dict[str, _System] = {}
    if "langchain" in names:
        kwargs = {"max_length": rerank_max_length} if rerank_max_length else {}
        hf = HuggingFaceCrossEncoder(model_name=reranker.name, model_kwargs=kwargs)
        native = ContextualCompressionRetriever(
            base_compressor=CrossEncoderReranker(model=hf, top_n=top_k), base_retriever=base
        )
        out["langchain"] = _System(lambda q: [d.id for d in native.invoke(q)], None, _max_length(hf.client))
    if "langchain+twostage-compressor" in names:
        ours = ContextualCompressionRetriever(
            base_compressor=TwoStageCompressor(reranker=reranker, top_n=top_k), base_retriever=base
        )
        out["langchain+twostage-compressor"] = _System(
            lambda q: [d.id for d in ours.invoke(q)], None, _max_length(reranker.model), reranker
        )
    if "twostage-langchain" in names:
        adapter = TwoStageRetriever.from_chroma(store, reranker=reranker, limit=limit, top_k=top_k)
        out["twostage-langchain"] = _System(
            lambda q: [d.id for d in adapter.invoke(q)], adapter.pipeline, _max_length(reranker.model), reranker
        )
    return out


def _llamaindex_systems(names, collection, embedder, reranker, limit, top_k, rerank_max_length):
    from llama_index.core import VectorStoreIndex
    from llama_index.core.postprocessor import SentenceTransformerRerank
    from llama_index.vector_stores.chroma import ChromaVectorStore

    from ..llama_index import TwoStageEmbedding, TwoStageRerank, TwoStageRetriever

    embed_model = TwoStageEmbedding(embedder)
    vector_store = ChromaVectorStore(chroma_collection=collection)
    base = VectorStoreIndex.from_vector_store(vector_store, embed_model=embed_model).as_retriever(
        similarity_top_k=limit
    )
    out: dict[str, _System] = {}

    def chain(postprocessor):
        return lambda q: [n.node.node_id for n in postprocessor.postprocess_nodes(base.retrieve(q), query_str=q)]

    if "llamaindex" in names:
        native = SentenceTransformerRerank(model=reranker.name, top_n=top_k)
        if rerank_max_length:
            native._model.max_seq_length = rerank_max_length  # noqa: SLF001 - no constructor argument for it
        out["llamaindex"] = _System(chain(native), None, _max_length(native._model))  # noqa: SLF001
    if "llamaindex+twostage-rerank" in names:
        out["llamaindex+twostage-rerank"] = _System(
            chain(TwoStageRerank(reranker, top_n=top_k)), None, _max_length(reranker.model), reranker
        )
    if "twostage-llamaindex" in names:
        adapter = TwoStageRetriever.from_vector_store(
            vector_store, reranker, embed_model=embed_model, limit=limit, top_k=top_k
        )
        out["twostage-llamaindex"] = _System(
            lambda q: [n.node.node_id for n in adapter.retrieve(q)],
            adapter.pipeline,
            _max_length(reranker.model),
            reranker,
        )
    return out


# -- running ------------------------------------------------------------------------------------------------
def matmul_peak_gflops(n: int = 1024, repeat: int = 8) -> float:
    """This machine's fp32 matmul throughput: the best of ``repeat`` n×n numpy products (BLAS, all cores), the
    yardstick for "achieved GFLOP/s" of the cross-encoders."""
    rng = np.random.default_rng(0)
    a, b = rng.random((n, n), dtype=np.float32), rng.random((n, n), dtype=np.float32)
    a @ b  # warm the BLAS threads
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def model_shape(reranker: CrossEncoderReranker) -> dict[str, int]:
    """Layers, hidden and intermediate size of a BERT-style cross-encoder (from its config.json)."""
    from ..rerank.onnx import _read_json

    folder = getattr(reranker.model, "model_dir", None)  # the ONNX engine; torch: the loaded transformers config
    config = _read_json(Path(folder) / "config.json") if folder else reranker.model.model.config.to_dict()
    keys = {"layers": "num_hidden_layers", "hidden": "hidden_size", "intermediate": "intermediate_size"}
    if not all(config.get(v) for v in keys.values()):
        return {}
    return {k: int(config[v]) for k, v in keys.items()}


def flops(shape: dict[str, int], tokens: int, pairs: int) -> float:
    """FLOPs of BERT-style forward passes over ``tokens`` real tokens in ``pairs`` sequences: 2 × weights ×
    tokens for the dense layers, plus 4 × hidden × n² per layer for attention (QKᵀ and AV), n ≈ tokens/pairs."""
    h, i, layers = shape["hidden"], shape["intermediate"], shape["layers"]
    dense = layers * (4 * h * h + 2 * h * i) + h * h  # attention projections, FFN, pooler
    n = tokens / max(pairs, 1)
    return 2.0 * dense * tokens + 4.0 * layers * h * n * n * pairs


def machine_info() -> dict[str, Any]:
    """CPU, threads, load, matmul peak and library versions, to print next to the numbers."""
    import torch

    versions: dict[str, str | None] = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = None
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "python": platform.python_version(),
        "load_avg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "matmul_peak_gflops": matmul_peak_gflops(),
        "versions": versions,
    }


def run_benchmark(
    dataset_dir: str | os.PathLike[str] | None = None,
    *,
    limit: int = 20,
    **kwargs: Any,
) -> BenchReport:
    """Time every system in ``systems`` (default: all of :data:`SYSTEMS`; ``twostage`` is always added as
    the agreement reference) on the same queries over one shared collection, at one ``limit``.
    Keyword arguments as :func:`run_benchmarks`."""
    return run_benchmarks(dataset_dir, limits=[limit], **kwargs)[0]


def run_benchmarks(
    dataset_dir: str | os.PathLike[str] | None = None,
    *,
    limits: Sequence[int] = (20,),
    max_queries: int = 50,
    max_docs: int | None = None,
    top_k: int = 5,
    rerank_model: str | os.PathLike[str] | None = None,
    rerank_backend: str | None = None,
    rerank_max_length: int | None = None,
    embedding_model: str | os.PathLike[str] | BaseEmbedder | None = None,
    repeat: int = 1,
    warmup: int = 2,
    systems: Sequence[str] | None = None,
    db: str | os.PathLike[str] | None = None,
    progress: bool = True,
    stages: Sequence[StageArg] | None = None,
) -> list[BenchReport]:
    """One :class:`BenchReport` per ``limit`` in ``limits``; the collection and our cross-encoders are loaded
    once and shared.

    ``dataset_dir``: a BEIR folder (test split), else the bundled sample corpus. ``db``: where the collection
    is kept for reuse (default: a temporary folder removed afterwards). ``warmup`` untimed queries run
    through every system first; then each query runs ``repeat`` times per system, systems in rotated order.
    ``rerank_backend``: the engine of the ``twostage`` reference (and of the adapters and drop-ins); the
    ``twostage-<backend>`` systems force theirs. ``rerank_max_length``: token limit for every cross-encoder
    (default: each stack's own; see :func:`make_systems`). ``stages``: ``(model, keep[, options])`` (see
    :func:`check_stages`) for :data:`CASCADE`, which then runs too; each stage is a
    :class:`CrossEncoderReranker` on ``rerank_backend`` and ``rerank_max_length`` unless its options say
    otherwise, one per distinct model and engine (shared with ``twostage`` when they are the same)."""
    if isinstance(limits, (int, str)) or not limits:
        raise InvalidParameterError(f"limits must be a non-empty list of candidate counts, got {limits!r}")
    checked = [check_limit_top_k(limit, top_k) for limit in limits]
    check_positive_int(repeat, "repeat")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise InvalidParameterError(f"warmup must be an integer >= 0, got {warmup!r}")
    if rerank_max_length is not None:
        check_positive_int(rerank_max_length, "rerank_max_length")
    stage_specs = check_stages(stages, [limit for limit, _ in checked], min(top_k for _, top_k in checked))
    names = check_systems(systems, cascade=bool(stage_specs))
    data = load_bench_data(dataset_dir, max_queries=max_queries, max_docs=max_docs)
    from ..models import resolve_rerank_model

    model_name = _local_model(resolve_rerank_model(rerank_model), "--rerank-model")
    keys = [  # (model, engine, token limit) of each stage; a hosted or missing model stops here, before loading
        (
            _local_model(model, f"--stage {model}"),
            resolve_backend(options.get("backend", rerank_backend)),
            options.get("max_length", rerank_max_length),
        )
        for model, _, options in stage_specs
    ]
    # a missing model or engine stops here, before any indexing
    reranker = CrossEncoderReranker(model_name, backend=rerank_backend, max_length=rerank_max_length)
    loaded = {(model_name, reranker.backend, rerank_max_length): reranker}  # each once, however many stages use it
    for key in keys:
        if key not in loaded:
            loaded[key] = CrossEncoderReranker(key[0], backend=key[1], max_length=key[2])
    cascade = [(loaded[key], keep) for key, (_, keep, _) in zip(keys, stage_specs, strict=True)]
    engines = {
        name: reranker
        if backend == reranker.backend
        else CrossEncoderReranker(model_name, backend=backend, max_length=rerank_max_length)
        for name, backend in ENGINE_SYSTEMS.items()
        if name in names
    }
    shape = model_shape(reranker)
    embedder = as_embedder(embedding_model)
    reports = []
    with tempfile.TemporaryDirectory(prefix="twostage-bench-") as tmp:
        t0 = time.perf_counter()
        client, collection = build_collection(data, embedder, db if db is not None else tmp, progress=progress)
        build_s = time.perf_counter() - t0
        for limit, top_k in checked:
            machine = machine_info()
            built = make_systems(
                names,
                client=client,
                collection=collection,
                embedder=embedder,
                reranker=reranker,
                limit=limit,
                top_k=top_k,
                rerank_max_length=rerank_max_length,
                engines=engines,
                cascade=cascade,
            )
            results = {
                n: SystemResult(n, built[n].description or SYSTEMS[n], built[n].rerank_max_length) for n in names
            }
            for n, system in built.items():
                results[n].backend = system.reranker.backend if system.reranker is not None else None
                if system.cascade is not None:
                    results[n].cascade = [
                        {"model": r.name, "keep": k, "backend": r.backend, "max_length": _max_length(r.model)}
                        for r, k in cascade  # the stages' CrossEncoderRerankers, as built above
                    ]
                    results[n].cascade_ms = [[] for _ in system.cascade.stages]
                    shapes = [model_shape(e) for e in system.engines()]
                    results[n].model_shape = shapes[0] if all(x == shapes[0] for x in shapes) else {}
            _run(data, built, results, repeat=repeat, warmup=warmup, progress=progress, limit=min(limit, len(data.ids)))
            del built
            machine["load_avg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
            _agreement(data, results)
            reports.append(
                BenchReport(
                    dataset=data.name,
                    n_docs=len(data.ids),
                    n_queries=len(data.queries),
                    limit=limit,
                    top_k=top_k,
                    repeat=repeat,
                    warmup=warmup,
                    embedding_model=embedder.name,
                    rerank_model=reranker.name,
                    build_s=build_s,
                    systems=list(results.values()),
                    machine=machine,
                    rerank_backend=reranker.backend,
                    model_shape=shape,
                )
            )
        del client, collection  # let Chroma close its files before the folder goes
    return reports


def _local_model(name: str, flag: str) -> str:
    """``name``, unless it is a hosted reranker (the benchmark times local cross-encoders)."""
    from ..rerank.factory import hosted_provider

    provider = hosted_provider(name)
    if provider is not None and not os.path.exists(name):
        raise InvalidParameterError(
            f"{name!r} is a hosted {provider.capitalize()} model; the benchmark compares local cross-encoders, "
            f"which LangChain and LlamaIndex load natively: pass {flag} with a cross-encoder folder or hub id"
        )
    return name


def _run(data: BenchData, built, results, *, repeat: int, warmup: int, progress: bool, limit: int) -> None:
    from tqdm.auto import tqdm

    names = list(built)
    for i in range(warmup):  # loads lazy pieces (tokenizers, HNSW index, LlamaIndex settings) untimed
        for name in names:
            built[name].search(data.queries[i % len(data.queries)][1])
    for i, (_, query) in enumerate(tqdm(data.queries, desc="benchmark", unit="query", disable=not progress)):
        for name in names[i % len(names) :] + names[: i % len(names)]:  # rotate: no system always goes first
            system, result = built[name], results[name]
            engines = system.engines()
            for r in range(repeat):
                before = [dataclasses.replace(engine.total_stats) for engine in engines]
                t0 = time.perf_counter()
                ids = system.search(query)
                result.latencies_ms.append(1000.0 * (time.perf_counter() - t0))
                for engine, b in zip(engines, before, strict=True):  # ours count; calls are sequential: exact deltas
                    after = engine.total_stats
                    result.pairs += after.pairs - b.pairs
                    result.truncated = (result.truncated or 0) + after.truncated - b.truncated
                    result.tokens = (result.tokens or 0) + after.tokens - b.tokens
                    result.engine_s = (result.engine_s or 0.0) + after.seconds - b.seconds
                if not engines:  # the native stacks rerank every recalled candidate
                    result.pairs += limit
                if system.pipeline is not None:
                    timings = system.pipeline.last_timings
                    result.recall_ms.append(1000.0 * timings.recall_s)
                    result.rerank_ms.append(1000.0 * timings.rerank_s)
                if system.cascade is not None:
                    for ms, stage in zip(result.cascade_ms, system.cascade.last_run, strict=True):
                        ms.append(1000.0 * stage.seconds)
                if r == 0:
                    result.top_ids.append(list(ids))


def _agreement(data: BenchData, results: dict[str, SystemResult], examples: int = 3) -> None:
    reference = results[REFERENCE].top_ids
    for result in results.values():
        same = [ours == theirs for ours, theirs in zip(reference, result.top_ids, strict=True)]
        result.agreement = sum(same) / len(same)
        seen: set[str] = set()  # the demo queries repeat: show each differing query once
        for (qid, query), ours, theirs, ok in zip(data.queries, reference, result.top_ids, same, strict=True):
            if not ok and qid not in seen and len(seen) < examples:
                seen.add(qid)
                result.mismatches.append({"query_id": qid, "query": query, "twostage": ours, result.name: theirs})


# -- output -------------------------------------------------------------------------------------------------
def write_json(report: BenchReport, path: str | os.PathLike[str]) -> Path:
    out = Path(path)
    out.write_text(json.dumps(report.to_dict(), indent=2), encoding="utf-8")
    return out


def plot_report(report: BenchReport, path: str | os.PathLike[str]) -> Path:
    """Median (bar) and p95 (whisker) ms per query for each system; our stage split stacked. PNG/SVG/PDF."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [s.name for s in report.systems]
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(names) + 1.6))
    for y, s in enumerate(report.systems):
        stages = s.stage_medians_ms()
        if stages:  # recall and rerank medians stacked; the rest of the median is adapter/framework overhead
            ax.barh(y, stages["recall"], color="tab:blue", label="recall" if y == 0 else None)
            ax.barh(y, stages["rerank"], left=stages["recall"], color="tab:orange", label="rerank" if y == 0 else None)
            rest = max(0.0, s.median_ms - stages["recall"] - stages["rerank"])
            ax.barh(y, rest, left=stages["recall"] + stages["rerank"], color="tab:gray")
        else:
            ax.barh(y, s.median_ms, color="tab:green" if s.name in NATIVE else "tab:gray")
        ax.errorbar(s.p95_ms, y, fmt="|", color="black", markersize=12)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlabel("ms per query (bar: median; tick: p95)")
    ax.set_title(
        f"{report.dataset}: {report.n_queries} queries, {report.n_docs} docs, limit {report.limit}, "
        f"top_k {report.top_k}",
        fontsize=9,
    )
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
