"""``twostage bench``: every system runs on one shared collection and, with the same models and token limit,
returns the same top-k ids as our pipeline. No timing assertions: speed goes to the README."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from time_limits import SUBPROCESS_TIMEOUT

from twostage_integrations.bench import (
    CASCADE,
    ENGINE_SYSTEMS,
    SYSTEMS,
    build_collection,
    check_systems,
    flops,
    load_bench_data,
    run_benchmark,
)
from twostage_integrations.errors import InvalidParameterError

TOP_K = 3


@pytest.fixture(scope="module")
def report(embedder, rerank_model_path):
    # 60 sample passages, 3 queries; one token limit for every stack so their scores must match exactly.
    return run_benchmark(
        max_queries=3,
        max_docs=60,
        limit=10,
        top_k=TOP_K,
        rerank_model=rerank_model_path,
        rerank_max_length=192,
        embedding_model=embedder,
        warmup=0,
        progress=False,
    )


def test_every_system_runs_on_the_same_data(report):
    assert [s.name for s in report.systems] == list(SYSTEMS)
    assert (report.n_docs, report.n_queries, report.limit, report.top_k) == (60, 3, 10, TOP_K)
    for s in report.systems:
        assert s.pairs == 3 * 10, s.name  # every system reranked every candidate of every query
        assert len(s.latencies_ms) == 3 and all(t > 0 for t in s.latencies_ms)
        assert s.p95_ms >= s.median_ms > 0 and s.queries_per_s > 0
        assert [len(ids) for ids in s.top_ids] == [TOP_K] * 3, s.name
        assert s.rerank_max_length == 192, s.name


def test_all_systems_return_our_top_k(report):
    ours = report.system("twostage").top_ids
    assert len({tuple(ids) for ids in ours}) == 3  # three different demo queries, three different answers
    for s in report.systems:
        if s.name == "twostage-onnx-int8":  # int8 weights: close to fp32, not identical; measured, not asserted
            assert 0.0 <= s.agreement <= 1.0 and len(s.top_ids) == 3
            continue
        assert s.top_ids == ours, (s.name, s.mismatches)
        assert s.agreement == 1.0 and s.mismatches == []


def test_engines_and_their_counts(report):
    by_name = {s.name: s for s in report.systems}
    assert {n: by_name[n].backend for n in ENGINE_SYSTEMS} == ENGINE_SYSTEMS
    assert by_name["twostage"].backend == report.rerank_backend
    assert by_name["langchain"].backend is None and by_name["langchain"].truncated is None
    cut = {by_name[n].truncated for n in ("twostage", *ENGINE_SYSTEMS)}
    assert len(cut) == 1  # every engine cuts the same pairs at 192 tokens
    for n in ("twostage", *ENGINE_SYSTEMS):
        s = by_name[n]
        assert s.tokens >= s.pairs * 8 and s.engine_s > 0
        assert report.gflops(s) > 0 and report.peak_share(s) > 0
    assert report.machine["matmul_peak_gflops"] > 0
    assert report.gflops(by_name["langchain"]) is None


@pytest.fixture(scope="module")
def cut_model_dir(tmp_path_factory, rerank_model_path):
    """A cheaper first stage without training: the shared cross-encoder's first 2 of 6 layers."""
    from twostage_integrations.finetune.model import load_base

    out = tmp_path_factory.mktemp("ce-2-layers")
    model, info = load_base(rerank_model_path, layers=2, max_length=192)
    assert info["layers"] == 2
    model.save_pretrained(str(out))
    return str(out)


CASCADE_KEEP = 6
CHEAP_MAX_LENGTH = 64  # the cheap stage's own token limit (a stage option), the strong one keeps 192


@pytest.fixture(scope="module")
def cascade_run(tmp_path_factory, embedder, rerank_model_path, cut_model_dir):
    db = tmp_path_factory.mktemp("bench-db")  # kept, so the test can recall from the very same collection
    report = run_benchmark(
        max_queries=3,
        max_docs=60,
        limit=10,
        top_k=TOP_K,
        rerank_max_length=192,
        warmup=0,
        progress=False,
        rerank_model=rerank_model_path,
        embedding_model=embedder,
        systems=["twostage"],  # the cascade joins because stages are given
        stages=[(cut_model_dir, CASCADE_KEEP, {"max_length": CHEAP_MAX_LENGTH}), (rerank_model_path, None)],
        db=db,
    )
    return report, db


def test_cascade_row_is_what_cascade_rerank_returns(cascade_run, embedder, rerank_model_path, cut_model_dir):
    from twostage_integrations import ChromaRecall, CrossEncoderReranker
    from twostage_integrations.rerank.cascade import Cascade

    report, db = cascade_run
    assert [s.name for s in report.systems] == ["twostage", CASCADE]
    row = report.system(CASCADE)
    data = load_bench_data(max_queries=3, max_docs=60)
    client, collection = build_collection(data, embedder, db, progress=False)
    recall = ChromaRecall(collection, client=client, embedding_model=embedder)
    backend = report.rerank_backend
    cheap = CrossEncoderReranker(cut_model_dir, backend=backend, max_length=CHEAP_MAX_LENGTH)
    strong = CrossEncoderReranker(rerank_model_path, backend=backend, max_length=192)
    cascade = Cascade([(cheap, CASCADE_KEEP), (strong, None)])
    expected = [[h.id for h in cascade.rerank(q, recall.search(q, 10), TOP_K)] for _, q in data.queries]
    assert row.top_ids == expected
    assert [len(ids) for ids in row.top_ids] == [TOP_K] * 3
    # expected to differ somewhat from the single strong model: measured, not asserted
    same = [a == b for a, b in zip(row.top_ids, report.system("twostage").top_ids, strict=True)]
    assert row.agreement == sum(same) / 3


def test_cascade_row_numbers(cascade_run, rerank_model_path, cut_model_dir):
    report, _ = cascade_run
    row, reference = report.system(CASCADE), report.system("twostage")
    assert row.pairs == 3 * (10 + CASCADE_KEEP)  # the cheap stage scores every candidate, the strong one KEEP
    assert reference.pairs == 3 * 10
    backend = report.rerank_backend
    assert row.cascade == [
        {"model": cut_model_dir, "keep": CASCADE_KEEP, "backend": backend, "max_length": CHEAP_MAX_LENGTH},
        {"model": rerank_model_path, "keep": None, "backend": backend, "max_length": 192},
    ]
    assert row.backend == reference.backend == backend
    stages = row.stage_medians_ms()
    assert stages["recall"] > 0 and stages["rerank 1"] > 0 and stages["rerank 2"] > 0
    for rerank, first, second in zip(row.rerank_ms, *row.cascade_ms, strict=True):
        assert first + second <= rerank  # both stages run inside the timed rerank
    assert report.gflops(row) is None  # 2 and 6 layers: one FLOP estimate cannot cover both
    assert report.gflops(reference) > 0
    json_row = {s["name"]: s for s in report.to_dict()["systems"]}[CASCADE]
    assert json_row["ratio_vs"]["twostage"] == pytest.approx(row.median_ms / reference.median_ms)
    assert json_row["stage_median_ms"] == stages and cut_model_dir in json_row["description"]


def test_cascade_in_table_and_plot(cascade_run, tmp_path):
    from rich.console import Console

    from twostage_integrations.bench import plot_report
    from twostage_integrations.cli.bench import report_table

    report, _ = cascade_run
    console = Console(width=300, record=True)
    console.print(report_table(report))
    text = console.export_text()
    assert CASCADE in text and "speed × twostage" in text
    stages = report.system(CASCADE).stage_medians_ms()
    assert f"({stages['rerank 1']:.1f} + {stages['rerank 2']:.1f})" in text
    out = plot_report(report, tmp_path / "cascade.png")
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_flop_estimate():
    shape = {"layers": 6, "hidden": 384, "intermediate": 1536}
    # MiniLM-L6 at 192 tokens: ~10.8 M dense weights × 2 × 192, plus attention: about 4.5 GFLOP per pair
    assert flops(shape, 192, 1) / 1e9 == pytest.approx(4.47, abs=0.05)
    assert flops(shape, 2 * 192, 2) == pytest.approx(2 * flops(shape, 192, 1))


def test_stage_split_only_for_our_pipeline(report):
    for s in report.systems:
        stages = s.stage_medians_ms()
        if s.name in ("twostage", "twostage-langchain", "twostage-llamaindex", *ENGINE_SYSTEMS):
            assert stages["recall"] > 0 and stages["rerank"] > 0
            # a split of the same calls: both stages run inside the timed call
            for total, recall, rerank in zip(s.latencies_ms, s.recall_ms, s.rerank_ms, strict=True):
                assert recall + rerank <= total
        else:
            assert stages is None


def test_json_and_ratios(report, tmp_path):
    data = report.to_dict()
    json.dumps(data)  # plain types only
    rows = {s["name"]: s for s in data["systems"]}
    assert rows["langchain"]["ratio_vs"]["langchain"] == 1.0
    assert rows["llamaindex"]["ratio_vs"]["llamaindex"] == 1.0
    assert rows["twostage"]["ratio_vs"]["langchain"] == pytest.approx(
        rows["twostage"]["median_ms"] / rows["langchain"]["median_ms"]
    )
    assert data["machine"]["cpu_count"] == os.cpu_count()


def test_plot_is_written(report, tmp_path):
    from twostage_integrations.bench import plot_report

    out = plot_report(report, tmp_path / "bench.png")
    assert out.stat().st_size > 1000 and out.read_bytes()[:4] == b"\x89PNG"


def test_beir_subset_keeps_relevant_docs(scifact_dir):
    from twostage_integrations.evaluation.beir import load_beir

    data = load_bench_data(scifact_dir, max_queries=5, max_docs=40)
    qrels = load_beir(scifact_dir, "test", max_queries=5).qrels
    assert len(data.queries) == 5 and len(data.ids) == 40 == len(set(data.ids))
    assert {d for q in qrels.values() for d in q} <= set(data.ids)
    assert load_bench_data(scifact_dir, max_queries=5, max_docs=40).ids == data.ids  # seeded


def test_sample_queries_cycle():
    data = load_bench_data(max_queries=8)
    assert len(data.queries) == 8 and data.queries[6] == data.queries[0] and len(data.ids) == 458


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"limit": 3, "top_k": 5}, "top_k"),
        ({"systems": ["langchain", "haystack"]}, "haystack"),
        ({"repeat": 0}, "repeat"),
        ({"warmup": -1}, "warmup"),
        ({"rerank_model": "rerank-v3.5"}, "local cross-encoders"),
        ({"max_docs": 0}, "max_docs"),
        ({"rerank_backend": "tensorrt"}, "onnx-int8"),
    ],
)
def test_bad_input_fails_before_any_work(kwargs, match):
    with pytest.raises(InvalidParameterError, match=match):
        run_benchmark(**kwargs)


def test_reference_is_always_first():
    assert check_systems(["llamaindex"]) == ["twostage", "llamaindex"]


def test_cli_json_smoke(tmp_path, rerank_model_path):
    # Default token limits: LlamaIndex's SentenceTransformerRerank hard-codes 512, the model's own is 192.
    out = tmp_path / "bench.json"
    exe = shutil.which("twostage")
    assert exe, "console script `twostage` is not installed (pip install -e .)"
    proc = subprocess.run(
        [exe, "bench", "--max-queries", "2", "--max-docs", "30",
         "--limit", "5", "--top-k", "2", "--warmup", "0", "--systems", "llamaindex,langchain",
         "--rerank-model", rerank_model_path, "--json", str(out)],
        env={**os.environ, "COLUMNS": "250"}, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "median ms" in proc.stdout and "llamaindex" in proc.stdout and "GFLOP/s" in proc.stdout
    data = json.loads(out.read_text())
    rows = {s["name"]: s for s in data["systems"]}
    assert list(rows) == ["twostage", "llamaindex", "langchain"]
    assert rows["llamaindex"]["rerank_max_length"] == 512
    assert rows["twostage"]["rerank_max_length"] == rows["langchain"]["rerank_max_length"] == 192
    assert all(len(r["latencies_ms"]) == 2 and len(r["top_ids"][0]) == 2 for r in rows.values())


INT8_ROW = "dense:10 > default@backend=onnx-int8 > top_k=5"
DENSE_ROW = "dense:20 > default > top_k=5"  # what the native stacks build (dense recall, the same weights)


def test_preset_rows_next_to_the_natives_and_peers(embedder, rerank_model_path, monkeypatch):
    """Two specs, two rows (the default pipeline first), next to native LangChain and one ST peer. The default is
    pinned to exact, whatever DEFAULT_PRESET says today (tests/unit/test_bench_rows.py covers another default)."""
    from rich.console import Console

    from twostage_integrations.bench import run_preset_benchmark
    from twostage_integrations.bench.specs import ENGINE_LABELS
    from twostage_integrations.cli.bench import preset_table
    from twostage_integrations.spec import presets

    monkeypatch.setattr(presets, "DEFAULT_PRESET", "exact")
    monkeypatch.setenv("TWOSTAGE_RERANK_MODEL", rerank_model_path)
    report = run_preset_benchmark(
        pipelines=["exact", INT8_ROW, DENSE_ROW], systems=["langchain", "st-onnx"], max_queries=2, max_docs=40,
        embedding_model=embedder, warmup=0, progress=False,
    )  # fmt: skip
    assert [s.name for s in report.systems] == ["exact (default)", INT8_ROW, DENSE_ROW, "langchain", "st-onnx"]
    rows = {s.name: s for s in report.systems}
    exact, int8, native, peer = (rows[n] for n in ("exact (default)", INT8_ROW, "langchain", "st-onnx"))
    assert exact.engine == ENGINE_LABELS[exact.backend] and int8.engine == "ONNX Runtime int8"
    assert native.engine == "ST torch fp32"
    assert (exact.pairs, int8.pairs, native.pairs) == (2 * 20, 2 * 10, 2 * 20)  # each row's own recall depth
    assert exact.same_set == 1.0 and 0.0 <= native.same_set <= 1.0  # exact recalls hybrid; the natives dense
    assert native.top_ids == rows[DENSE_ROW].top_ids  # the native stack rebuilds the dense pipeline: same weights
    assert 0.0 <= int8.same_set <= 1.0 and [len(ids) for ids in int8.top_ids] == [5, 5]
    if peer.ran:  # optimum installed: ST's own ONNX export of the same weights
        assert peer.engine == "ST ONNX Runtime fp32" and peer.same_set == 1.0
    else:
        assert peer.unavailable.split(":")[0] in ("not installed", "not usable", "failed")
    by_name = {s["name"]: s for s in report.to_dict()["systems"]}
    assert by_name[INT8_ROW]["ratio_vs"]["langchain"] == pytest.approx(int8.median_ms / native.median_ms)
    assert by_name[INT8_ROW]["spec"] == INT8_ROW and report.machine["cpu_model"]
    console = Console(width=300, record=True)
    console.print(preset_table(report))
    text = console.export_text()
    assert "same top-5 as exact (default)" in text and report.machine["cpu_model"] in text
