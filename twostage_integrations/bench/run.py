"""Speed of the two-stage pipeline next to the same pipeline built natively in LangChain and LlamaIndex.

Every system reads ONE embedded Chroma collection (built once), embeds queries with the same
all-MiniLM-L6-v2 weights and reranks with the same cross-encoder weights, in the same process. Queries
are timed one at a time with the system order rotated per query, so CPU frequency drift and background
load hit every system alike. Because the models are the same, every system should return the same top-k
ids as ``twostage``; the report says for how many queries it does (``agreement``) and shows the first
mismatches. The systems are listed in :mod:`.systems`.

Needs the ``bench`` extra: ``pip install "twostage-integrations[bench]"``.

>>> from twostage_integrations.bench import run_benchmark
>>> report = run_benchmark(max_queries=10, rerank_model="path/to/cross-encoder")  # doctest: +SKIP
>>> {s.name: round(s.median_ms) for s in report.systems}  # doctest: +SKIP
{'twostage': 210, 'langchain': 214, ...}
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..embeddings import BaseEmbedder, as_embedder
from ..errors import InvalidParameterError
from ..rerank.cross_encoder import CrossEncoderReranker
from ..rerank.onnx import AUTO, resolve_backend
from ..validation import check_limit_top_k, check_positive_int
from .built import BuiltSystem, max_length_of
from .data import BenchData, build_collection, load_bench_data
from .machine import load_average, machine_info, model_shape
from .report import BenchReport, SystemResult
from .systems import (
    ENGINE_SYSTEMS,
    REFERENCE,
    SYSTEMS,
    StageArg,
    check_stages,
    check_systems,
    make_systems,
)

CascadeStages = list[tuple[CrossEncoderReranker, int | None]]


def run_benchmark(
    dataset_dir: str | os.PathLike[str] | None = None,
    *,
    limit: int = 20,
    **kwargs: Any,
) -> BenchReport:
    """Time every system on the same queries over one shared collection, at one ``limit``.

    Args:
        dataset_dir: A BEIR folder (test split); ``None``: the bundled sample corpus and demo queries.
        limit: Candidates recalled per query.
        **kwargs: As :func:`run_benchmarks` (``systems``: default all of :data:`SYSTEMS`; ``twostage`` is
            always added as the agreement reference).

    Returns:
        The report.

    Raises:
        InvalidParameterError: As :func:`run_benchmarks`.
    """
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
    """Time the systems at each limit; the collection and our cross-encoders are loaded once and shared.

    Args:
        dataset_dir: A BEIR folder (test split); ``None``: the bundled sample corpus and demo queries.
        limits: Candidate counts; one report each.
        max_queries: Queries to time (the demo queries are cycled).
        max_docs: Passages to keep, the chosen queries' relevant ones first (see :func:`load_bench_data`).
        top_k: Results kept after reranking.
        rerank_model: The cross-encoder every system loads (default: ``$TWOSTAGE_RERANK_MODEL``).
        rerank_backend: The engine of the ``twostage`` reference (and of the adapters and drop-ins); the
            ``twostage-<backend>`` systems force theirs.
        rerank_max_length: Token limit for every cross-encoder (default: each stack's own; see
            :func:`make_systems`).
        embedding_model: The query and passage embedder (default: all-MiniLM-L6-v2).
        repeat: Timed runs of each query per system, systems in rotated order.
        warmup: Untimed queries through every system first.
        systems: The systems to run (see :func:`check_systems`).
        db: Where the collection is kept for reuse (default: a temporary folder removed afterwards).
        progress: Show progress bars.
        stages: ``(model, keep[, options])`` (see :func:`check_stages`) for :data:`CASCADE`, which then runs
            too; each stage is a :class:`CrossEncoderReranker` on ``rerank_backend`` and ``rerank_max_length``
            unless its options say otherwise, one per distinct model and engine (shared with ``twostage``).

    Returns:
        One :class:`BenchReport` per limit, in the order of ``limits``.

    Raises:
        InvalidParameterError: A bad argument, system, stage or dataset, or a hosted rerank model; raised
            before any model is loaded or any passage indexed.
    """
    checked = _check_arguments(limits, top_k, repeat, warmup, rerank_max_length)
    stage_specs = check_stages(stages, [limit for limit, _ in checked], min(top_k for _, top_k in checked))
    names = check_systems(systems, cascade=bool(stage_specs))
    data = load_bench_data(dataset_dir, max_queries=max_queries, max_docs=max_docs)
    reranker, engines, cascade = _load_rerankers(rerank_model, rerank_backend, rerank_max_length, stage_specs, names)
    shape = model_shape(reranker)
    embedder = as_embedder(embedding_model)
    run = _Run(data, names, reranker, engines, cascade, embedder, rerank_max_length, repeat, warmup, progress)
    with tempfile.TemporaryDirectory(prefix="twostage-bench-") as tmp:
        t0 = time.perf_counter()
        run.client, run.collection = build_collection(data, embedder, db if db is not None else tmp, progress=progress)
        run.build_s = time.perf_counter() - t0
        reports = [_bench_at(run, limit, k, shape) for limit, k in checked]
        run.client = run.collection = None  # let Chroma close its files before the folder goes
    return reports


@dataclass
class _Run:
    """What every limit of one :func:`run_benchmarks` call shares."""

    data: BenchData
    names: list[str]
    reranker: CrossEncoderReranker  # the twostage reference
    engines: dict[str, CrossEncoderReranker]  # of the twostage-<backend> systems
    cascade: CascadeStages
    embedder: BaseEmbedder
    rerank_max_length: int | None
    repeat: int = 1
    warmup: int = 2
    progress: bool = True
    client: Any = None
    collection: Any = None
    build_s: float = 0.0


def _check_arguments(
    limits: Sequence[int], top_k: int, repeat: int, warmup: int, rerank_max_length: int | None
) -> list[tuple[int, int]]:
    """``(limit, top_k)`` per limit, after checking the numbers (before anything is loaded)."""
    if isinstance(limits, (int, str)) or not limits:
        raise InvalidParameterError(f"limits must be a non-empty list of candidate counts, got {limits!r}")
    checked = [check_limit_top_k(limit, top_k) for limit in limits]
    check_positive_int(repeat, "repeat")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise InvalidParameterError(f"warmup must be an integer >= 0, got {warmup!r}")
    if rerank_max_length is not None:
        check_positive_int(rerank_max_length, "rerank_max_length")
    return checked


def _load_rerankers(
    rerank_model: str | os.PathLike[str] | None,
    rerank_backend: str | None,
    rerank_max_length: int | None,
    stage_specs: list[tuple[str, int | None, dict[str, Any]]],
    names: list[str],
) -> tuple[CrossEncoderReranker, dict[str, CrossEncoderReranker], CascadeStages]:
    """The reference cross-encoder, the ``twostage-<backend>`` engines and the cascade stages, each distinct
    (model, engine, token limit) loaded once however many systems or stages use it."""
    from ..models import resolve_rerank_model

    model_name = _local_model(resolve_rerank_model(rerank_model), "--rerank-model")
    keys = [  # (model, engine, token limit) of each stage; a hosted or missing model stops here, before loading
        (
            _local_model(model, f"--stage {model}"),
            resolve_backend(options.get("backend", rerank_backend)),
            options.get("max_length", rerank_max_length),
            tuple((k, options[k]) for k in ("long_docs", "window", "stride") if k in options),  # windowed stages
        )
        for model, _, options in stage_specs
    ]
    # a missing model or engine stops here, before any indexing
    reranker = CrossEncoderReranker(model_name, backend=rerank_backend, max_length=rerank_max_length)
    # Stages left on `auto` run the reference's pick: a bench compares one engine across its stages.
    keys = [(m, reranker.backend if backend == AUTO else backend, n, w) for m, backend, n, w in keys]
    loaded: dict[tuple[Any, ...], CrossEncoderReranker] = {
        (model_name, reranker.backend, rerank_max_length, ()): reranker
    }  # each once, however many stages use it
    for key in keys:
        if key not in loaded:
            loaded[key] = CrossEncoderReranker(key[0], backend=key[1], max_length=key[2], **dict(key[3]))
    cascade = [(loaded[key], keep) for key, (_, keep, _) in zip(keys, stage_specs, strict=True)]
    engines = {
        name: reranker
        if backend == reranker.backend
        else CrossEncoderReranker(model_name, backend=backend, max_length=rerank_max_length)
        for name, backend in ENGINE_SYSTEMS.items()
        if name in names
    }
    return reranker, engines, cascade


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


def _bench_at(run: _Run, limit: int, top_k: int, shape: dict[str, int]) -> BenchReport:
    """One report: build the systems at ``limit``, time them, compare their top-k with the reference's."""
    machine = machine_info()
    results = _time_systems(run, limit, top_k)  # the built systems are gone once it returns
    machine["load_avg_end"] = load_average()
    _agreement(run.data, results)
    return BenchReport(
        dataset=run.data.name,
        n_docs=len(run.data.ids),
        n_queries=len(run.data.queries),
        limit=limit,
        top_k=top_k,
        repeat=run.repeat,
        warmup=run.warmup,
        embedding_model=run.embedder.name,
        rerank_model=run.reranker.name,
        build_s=run.build_s,
        systems=list(results.values()),
        machine=machine,
        rerank_backend=run.reranker.backend,
        model_shape=shape,
    )


def _time_systems(run: _Run, limit: int, top_k: int) -> dict[str, SystemResult]:
    built = make_systems(
        run.names,
        client=run.client,
        collection=run.collection,
        embedder=run.embedder,
        reranker=run.reranker,
        limit=limit,
        top_k=top_k,
        rerank_max_length=run.rerank_max_length,
        engines=run.engines,
        cascade=run.cascade,
    )
    results = {n: SystemResult(n, built[n].description or SYSTEMS[n], built[n].rerank_max_length) for n in run.names}
    for n, system in built.items():
        _describe(results[n], system, run.cascade)
    _time_queries(
        run.data,
        built,
        results,
        repeat=run.repeat,
        warmup=run.warmup,
        progress=run.progress,
        limit=min(limit, len(run.data.ids)),
    )
    return results


def _describe(result: SystemResult, system: BuiltSystem, cascade: CascadeStages) -> None:
    """Fill in what ``system`` runs: our engine, and for the cascade its stages and their model shape."""
    result.backend = system.reranker.backend if system.reranker is not None else None
    if system.cascade is None:
        return
    result.cascade = [
        {"model": r.name, "keep": k, "backend": r.backend, "max_length": max_length_of(r.model)}
        for r, k in cascade  # the stages' CrossEncoderRerankers, as built by _load_rerankers
    ]
    result.cascade_ms = [[] for _ in system.cascade.stages]
    shapes = [model_shape(e) for e in system.engines()]
    result.model_shape = shapes[0] if all(x == shapes[0] for x in shapes) else {}


def _time_queries(
    data: BenchData,
    built: dict[str, BuiltSystem],
    results: dict[str, SystemResult],
    *,
    repeat: int,
    warmup: int,
    progress: bool,
    limit: int,
) -> None:
    from tqdm.auto import tqdm

    names = list(built)
    for i in range(warmup):  # loads lazy pieces (tokenizers, HNSW index, LlamaIndex settings) untimed
        for name in names:
            built[name].search(data.queries[i % len(data.queries)][1])
    for i, (_, query) in enumerate(tqdm(data.queries, desc="benchmark", unit="query", disable=not progress)):
        for name in names[i % len(names) :] + names[: i % len(names)]:  # rotate: no system always goes first
            for r in range(repeat):
                ids = _time_one(built[name], results[name], query, limit)
                if r == 0:
                    results[name].top_ids.append(list(ids))


def _time_one(system: BuiltSystem, result: SystemResult, query: str, limit: int) -> list[str]:
    """Run one query through ``system``, adding its latency, engine counts and stage split to ``result``."""
    engines = system.engines()
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
    return ids


def _agreement(
    data: BenchData, results: dict[str, SystemResult], examples: int = 3, reference: str = REFERENCE
) -> None:
    """Per system: the share of queries whose top-k list (``agreement``) and top-k set (``same_set``) equal
    ``reference``'s, and the first differing queries (``mismatches``)."""
    ours = results[reference].top_ids
    for result in results.values():
        if not result.ran:
            continue
        same = [a == b for a, b in zip(ours, result.top_ids, strict=True)]
        result.agreement = sum(same) / len(same)
        sets = [set(a) == set(b) for a, b in zip(ours, result.top_ids, strict=True)]
        result.same_set = sum(sets) / len(sets)
        seen: set[str] = set()  # the demo queries repeat: show each differing query once
        for (qid, query), mine, theirs, ok in zip(data.queries, ours, result.top_ids, same, strict=True):
            if not ok and qid not in seen and len(seen) < examples:
                seen.add(qid)
                result.mismatches.append({"query_id": qid, "query": query, reference: mine, result.name: theirs})
