"""``twostage bench --preset A,B`` / ``--pipeline SPEC``: one row per pipeline, next to native LangChain and
LlamaIndex and sentence-transformers' own ONNX / OpenVINO backends, on one collection, in one process.

The rows are :func:`~.specs.spec_rows`: the default pipeline first, then the ones asked for, then ``exact``. The
native stacks and the peers (:mod:`.peers`) rebuild the ``exact`` row's pipeline (its recall depth, cross-encoder,
token limit and top_k), and every row's top-k set is compared with ``exact``'s (``same_set``). Queries are timed
one at a time with the order of the rows rotated per query, as in :func:`~.run.run_benchmarks`.

>>> from twostage_integrations.bench import run_preset_benchmark
>>> specs = ["exact", "dense:20 > default@backend=onnx-int8 > top_k=5"]
>>> report = run_preset_benchmark(pipelines=specs)  # doctest: +SKIP
>>> [(s.name, s.engine, s.same_set) for s in report.systems]  # doctest: +SKIP
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..embeddings import BaseEmbedder, as_embedder
from ..errors import InvalidParameterError
from ..pipeline import TwoStagePipeline
from ..recall.chroma import ChromaRecall
from ..spec import PipelineSpec, build_reranker, recall_over
from ..spec.build import SpecLike
from .built import BuiltSystem, max_length_of
from .data import BenchData, build_collection, load_bench_data
from .machine import load_average, machine_info, model_shape
from .peers import PEERS, peer_systems
from .report import BenchReport, SystemResult
from .run import _agreement, _check_arguments, _time_queries
from .specs import SpecRow, cross_encoders, engine_label, reference_row, spec_rows
from .systems import NATIVE, SYSTEMS

PRESET_SYSTEMS = (*NATIVE, *PEERS)  # what runs next to the pipeline rows; default: all of them


def check_preset_systems(names: Sequence[str] | None) -> list[str]:
    """The native stacks and peers to run next to the pipeline rows.

    Args:
        names: Some of :data:`PRESET_SYSTEMS`; None: all of them; empty: none (the pipeline rows only).

    Returns:
        The names, each once, in the order given.

    Raises:
        InvalidParameterError: ``names`` is a string or names another system.
    """
    if isinstance(names, (str, bytes)):
        raise InvalidParameterError(f"systems must be a list of system names, got the string {names!r}")
    chosen = list(dict.fromkeys(PRESET_SYSTEMS if names is None else names))
    unknown = [n for n in chosen if n not in PRESET_SYSTEMS]
    if unknown:
        raise InvalidParameterError(
            f"next to --preset/--pipeline rows bench runs {', '.join(PRESET_SYSTEMS)}; unknown here: "
            f"{', '.join(unknown)} (the other systems run without --preset/--pipeline)"
        )
    return chosen


@dataclass
class _Rows:
    """The built pipeline rows: their pipelines by row name, and the ``exact`` row's pieces the peers reuse."""

    rows: list[SpecRow]
    reference: SpecRow
    pipelines: dict[str, TwoStagePipeline] = field(default_factory=dict)


def run_preset_benchmark(
    dataset_dir: str | os.PathLike[str] | None = None,
    *,
    pipelines: Sequence[SpecLike] | None = None,
    default: PipelineSpec | None = None,
    limit: int | None = None,
    long_docs: str | None = None,
    systems: Sequence[str] | None = None,
    max_queries: int = 50,
    max_docs: int | None = None,
    embedding_model: str | os.PathLike[str] | BaseEmbedder | None = None,
    repeat: int = 1,
    warmup: int = 2,
    db: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> BenchReport:
    """Time one row per pipeline spec next to the native stacks and sentence-transformers' backends.

    Args:
        dataset_dir: A BEIR folder (test split); ``None``: the bundled sample corpus and demo queries.
        pipelines: Preset names or specs (any form :func:`~twostage_integrations.spec.resolve` reads), one row
            each; the default pipeline and ``exact`` are always rows (see :func:`~.specs.spec_rows`).
        default: The default pipeline (default: what ``twostage query`` runs with no flags).
        limit: Recall this many candidates in every row and in the stacks beside them (None: each spec's own).
        long_docs: Long passages scored this way (``max``, ``top2mean``) by every row's stages that name none;
            the native stacks and peers cut them, as they always do (None: as each spec says).
        systems: Native stacks and peers to run (see :func:`check_preset_systems`); None: all.
        max_queries: Queries to time (the demo queries are cycled).
        max_docs: Passages to keep, the chosen queries' relevant ones first.
        embedding_model: The query and passage embedder of every row (default: all-MiniLM-L6-v2).
        repeat: Timed runs of each query per system.
        warmup: Untimed queries through every system first.
        db: Where the collection is kept for reuse (default: a temporary folder removed afterwards).
        progress: Show progress bars.

    Returns:
        The report: the rows first (``reference`` is the ``exact`` row's name), then the others; a peer that
        cannot run is a row with ``unavailable`` set and no timings.

    Raises:
        InvalidParameterError: A spec that cannot be read, rows with different top_k, an unknown system, a bad
            number; raised before any model is loaded or any passage indexed.
    """
    rows = spec_rows(pipelines, default, limit, long_docs)
    ref = reference_row(rows)
    names = check_preset_systems(systems)
    if names and not ref.spec.stages:
        raise InvalidParameterError(f"the native stacks rebuild {ref.label!r}, which has no rerank stage")
    _check_arguments([ref.spec.recall.limit], ref.spec.top_k, repeat, warmup, None)
    data = load_bench_data(dataset_dir, max_queries=max_queries, max_docs=max_docs)
    built_rows = _Rows(rows, ref)
    rerankers = {row.name: build_reranker(row.spec) for row in rows}  # a missing model stops here, before indexing
    embedder = as_embedder(embedding_model)
    with tempfile.TemporaryDirectory(prefix="twostage-bench-") as tmp:
        t0 = time.perf_counter()
        client, collection = build_collection(data, embedder, db if db is not None else tmp, progress=progress)
        build_s = time.perf_counter() - t0
        chroma = ChromaRecall(collection, client=client, embedding_model=embedder)
        for row in rows:
            stage1 = recall_over(row.spec, chroma)
            pipe = TwoStagePipeline(stage1, rerankers[row.name], limit=row.spec.recall.limit, top_k=row.spec.top_k)
            pipe.spec = row.spec
            built_rows.pipelines[row.name] = pipe
        report = _time_rows(data, built_rows, names, (client, collection, chroma, embedder), repeat, warmup, progress)
        report.build_s = build_s
        built_rows.pipelines.clear()  # let Chroma close its files before the folder goes
        del client, collection, chroma
    return report


def _search(pipe: TwoStagePipeline) -> Callable[[str], list[str]]:
    return lambda q: [h.id for h in pipe.search(q)]


Timed = dict[str, tuple[BuiltSystem | None, SystemResult]]  # None: a peer that did not run


def _row_systems(built: _Rows) -> Timed:
    """Each pipeline row as a system to time and its (empty) result."""
    out: Timed = {}
    for row in built.rows:
        pipe = built.pipelines[row.name]
        ces = cross_encoders(pipe.reranker)
        system = BuiltSystem(
            _search(pipe),
            pipe,
            max_length_of(ces[-1].model) if ces else None,
            engine=engine_label(pipe.reranker),
            counted=ces,
        )
        shapes = [model_shape(ce) for ce in ces]
        result = SystemResult(
            row.name,
            f"TwoStagePipeline.from_spec({str(row.spec)!r})",
            system.rerank_max_length,
            backend=ces[-1].backend if ces else None,
            engine=system.engine,
            spec=str(row.spec),
            model_shape=shapes[0] if shapes and all(s == shapes[0] for s in shapes) else {},
        )
        out[row.name] = (system, result)
    return out


def _time_rows(
    data: BenchData,
    built: _Rows,
    names: list[str],
    store: tuple[Any, Any, ChromaRecall, BaseEmbedder],
    repeat: int,
    warmup: int,
    progress: bool,
) -> BenchReport:
    """Build the native stacks and peers beside the rows, time everything interleaved, and report."""
    client, collection, chroma, embedder = store
    ref_spec = built.reference.spec
    ref_ce = cross_encoders(built.pipelines[built.reference.name].reranker)
    if names and not ref_ce:
        raise InvalidParameterError(f"the native stacks rebuild {built.reference.label!r}: it needs a cross-encoder")
    limit, top_k = ref_spec.recall.limit, ref_spec.top_k
    pairs = _row_systems(built)
    reference = ref_ce[-1] if ref_ce else None
    others = _other_systems(names, client, collection, chroma, embedder, reference, ref_spec, data.texts)
    for name, value in others.items():
        if isinstance(value, str):  # not installed, or its export failed: a row that says why
            pairs[name] = (None, SystemResult(name, PEERS.get(name, name), unavailable=value))
        else:
            description = value.description or SYSTEMS.get(name) or PEERS[name]
            result = SystemResult(name, description, value.rerank_max_length, engine=value.engine)
            pairs[name] = (value, result)
    systems = {n: s for n, (s, _) in pairs.items() if s is not None}
    results = {n: r for n, (_, r) in pairs.items()}
    machine = machine_info()
    timed = {n: results[n] for n in systems}
    _time_queries(
        data, systems, timed, repeat=repeat, warmup=warmup, progress=progress, limit=min(limit, len(data.ids))
    )
    machine["load_avg_end"] = load_average()
    _agreement(data, results, reference=built.reference.name)
    return BenchReport(
        dataset=data.name,
        n_docs=len(data.ids),
        n_queries=len(data.queries),
        limit=limit,
        top_k=top_k,
        repeat=repeat,
        warmup=warmup,
        embedding_model=embedder.name,
        rerank_model=ref_ce[-1].name if ref_ce else "none",
        build_s=0.0,
        systems=list(results.values()),
        machine=machine,
        rerank_backend=ref_ce[-1].backend if ref_ce else None,
        model_shape=model_shape(ref_ce[-1]) if ref_ce else {},
        reference=built.reference.name,
    )


def _other_systems(
    names: list[str],
    client: Any,
    collection: Any,
    chroma: ChromaRecall,
    embedder: BaseEmbedder,
    reranker: Any,
    spec: PipelineSpec,
    texts: Sequence[str],
) -> dict[str, BuiltSystem | str]:
    """The native stacks and peers among ``names``, rebuilding ``spec`` (the ``exact`` row) with ``reranker``'s
    model; a peer that cannot run maps to the reason."""
    from .native import langchain_systems, llamaindex_systems

    limit, top_k, max_length = spec.recall.limit, spec.top_k, spec.stages[-1].max_length if spec.stages else None
    out: dict[str, BuiltSystem | str] = {}
    if "langchain" in names:
        out.update(langchain_systems(["langchain"], client, collection, embedder, reranker, limit, top_k, max_length))
    if "llamaindex" in names:
        out.update(llamaindex_systems(["llamaindex"], collection, embedder, reranker, limit, top_k, max_length))
    peers = [n for n in names if n in PEERS]
    if peers:
        out.update(
            peer_systems(peers, chroma, reranker.name, limit=limit, top_k=top_k, max_length=max_length, texts=texts)
        )
    return {n: out[n] for n in names}
