"""``twostage bench --preset/--pipeline``: which rows run, their columns (engine, speed × the native stacks, same
top-k set as ``exact``) and the peers that are not installed. No weights: fake cross-encoders, a fake embedder."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from twostage_integrations.bench import (
    BenchReport,
    BuiltSystem,
    SystemResult,
    check_preset_systems,
    default_spec,
    engine_label,
    preset_run,
    spec_rows,
)
from twostage_integrations.bench import peers as peers_module
from twostage_integrations.bench.machine import cpu_model_and_cores
from twostage_integrations.bench.run import _agreement
from twostage_integrations.bench.specs import reference_row
from twostage_integrations.cli import app
from twostage_integrations.errors import InvalidParameterError, PipelineSpecError
from twostage_integrations.rerank.cascade import Cascade
from twostage_integrations.rerank.cross_encoder import CrossEncoderReranker
from twostage_integrations.rerank.engine import RerankStats
from twostage_integrations.rerank.fusion import FusedReranker
from twostage_integrations.spec import PRESETS, PipelineSpec
from twostage_integrations.testing import FakeEmbedder, FakeReranker

FAST = "dense:30 > default:10@backend=onnx-int8,max_length=64 > default > top_k=5"
FASTEST = "dense:20 > default@backend=onnx-int8 > top_k=5"


@pytest.fixture
def presets(monkeypatch):
    """Two more presets, as the integrator adds them: the rows must follow whatever PRESETS holds. The default
    is pinned to exact here, whatever DEFAULT_PRESET says today (a test below sets another default)."""
    from twostage_integrations.spec import presets as module

    monkeypatch.setattr(module, "DEFAULT_PRESET", "exact")
    monkeypatch.setitem(PRESETS, "fast", FAST)
    monkeypatch.setitem(PRESETS, "fastest", FASTEST)


class FakeCE(CrossEncoderReranker):
    """A CrossEncoderReranker without weights: word-overlap scores, counted like a real engine."""

    def __init__(self, backend: str = "onnx", name: str = "fake-ce") -> None:
        self.name, self.backend, self.max_length = name, backend, 16
        self.engine = SimpleNamespace(max_length=16, last_stats=RerankStats(), total_stats=RerankStats())
        self._words = FakeReranker()

    def score(self, query, texts):
        self.engine.total_stats.add(RerankStats(pairs=len(texts), tokens=8 * len(texts), seconds=1e-4))
        return self._words.score(query, texts)


# -- which rows ------------------------------------------------------------------------------------------------
def test_the_default_pipeline_leads_and_exact_is_always_a_row(presets):
    rows = spec_rows(["fastest", "fast"])
    assert [r.label for r in rows] == ["exact", "fastest", "fast"]  # the default (exact here) is one row
    assert rows[0].default and rows[0].name == "exact (default)" and not rows[1].default
    assert rows[0].spec == default_spec() == PipelineSpec.parse(PRESETS["exact"])
    assert reference_row(rows) is rows[0]
    assert [r.label for r in spec_rows(None)] == ["exact"]


def test_spec_strings_are_rows_and_equal_specs_are_one_row(presets):
    rows = spec_rows(["dense:20 > default@backend=onnx-int8 > top_k=5", "dense:50 > default > top_k=5", "exact"])
    assert [r.label for r in rows] == ["exact", "fastest", "dense:50 > default > top_k=5"]  # a preset's own name


def test_a_default_that_is_not_exact_leads_and_exact_follows(presets):
    rows = spec_rows(["fast"], default=PipelineSpec.parse(FASTEST))
    assert [r.name for r in rows] == ["fastest (default)", "fast", "exact"]
    assert reference_row(rows).label == "exact"


def test_a_limit_sets_every_rows_depth_and_presets_keep_their_names(presets):
    rows = spec_rows(["fastest", "dense:50 > default > top_k=5"], limit=50)
    assert [r.spec.recall.limit for r in rows] == [50, 50, 50]
    assert [r.name for r in rows] == ["exact (default)", "fastest", "dense:50 > default > top_k=5"]
    assert str(rows[1].spec) == "dense:50 > default@backend=onnx-int8 > top_k=5"
    # exact at 50 is the exact row at that depth; without a limit the same spec is a row of its own
    assert [r.label for r in spec_rows(["hybrid:50 > default > top_k=5"], limit=50)] == ["exact"]
    assert [r.label for r in spec_rows(["hybrid:50 > default > top_k=5"])] == ["exact", "hybrid:50 > default > top_k=5"]
    with pytest.raises(PipelineSpecError, match="more than the 8 it gets"):
        spec_rows(["fast"], limit=8)  # FAST's prefilter keeps 10


def test_long_docs_sets_every_stage_that_names_none(presets):
    rows = spec_rows(["fastest", "hybrid:20 > default@long_docs=top2mean > top_k=5"], long_docs="max")
    assert [[st.long_docs for st in r.spec.stages] for r in rows] == [["max"], ["max"], ["top2mean"]]
    assert str(rows[1].spec) == "dense:20 > default@backend=onnx-int8,long_docs=max > top_k=5"
    assert rows[0].default and reference_row(rows) is rows[0]  # exact, windowed too


def test_rows_must_share_top_k():
    with pytest.raises(InvalidParameterError, match="same top_k.*keeps 3"):
        spec_rows(["dense:20 > default > top_k=3"])
    with pytest.raises(InvalidParameterError, match="list of presets"):
        spec_rows("exact")


def test_systems_next_to_the_rows():
    assert check_preset_systems(None) == ["langchain", "llamaindex", *peers_module.PEERS]
    assert check_preset_systems(["st-onnx", "langchain", "st-onnx"]) == ["st-onnx", "langchain"]
    assert check_preset_systems([]) == []
    with pytest.raises(InvalidParameterError, match="twostage-langchain"):
        check_preset_systems(["twostage-langchain"])


# -- engine labels ---------------------------------------------------------------------------------------------
def test_engine_label_reads_the_built_rerankers():
    fp32, int8, torch = FakeCE("onnx"), FakeCE("onnx-int8"), FakeCE("torch")
    assert engine_label(Cascade([fp32])) == "ONNX Runtime fp32"
    assert engine_label(Cascade([(int8, 10), (torch, None)])) == "ONNX Runtime int8 → torch"
    assert engine_label(Cascade([(int8, 10), (FusedReranker(fp32), None)])) == "ONNX Runtime int8 → ONNX Runtime fp32"
    assert engine_label(Cascade([FakeReranker()])) == "fake-word-overlap"  # not a cross-encoder: its name
    assert engine_label(None) == "none"


# -- columns ---------------------------------------------------------------------------------------------------
def _result(name, median, **kwargs):
    return SystemResult(name, name, latencies_ms=[median, median], pairs=10, **kwargs)


def _report(systems):
    return BenchReport(
        "d", 10, 2, 20, 5, 1, 0, "emb", "ce", 0.0, systems, reference="exact (default)",
        machine={"cpu_model": "Test CPU 9000", "cores": 4, "cpu_count": 8, "load_avg_start": [1.0]},
    )  # fmt: skip


def test_ratio_columns_same_set_and_not_installed_rows():
    from rich.console import Console

    from twostage_integrations.cli.bench import preset_table

    rows = [
        _result("exact (default)", 100.0, engine="ONNX Runtime fp32", spec=PRESETS["exact"], same_set=1.0),
        _result("fastest", 50.0, engine="ONNX Runtime int8", spec=FASTEST, same_set=0.5),
        _result("langchain", 200.0, engine="ST torch fp32", same_set=1.0),
        _result("llamaindex", 400.0, engine="ST torch fp32", same_set=0.0),
        SystemResult("st-onnx", "ST onnx", unavailable="not installed: optimum[onnxruntime] (see docs/bench.md)"),
    ]
    report = _report(rows)
    assert report.ratio("fastest", "langchain") == 0.25 and report.ratio("st-onnx", "langchain") is None
    data = json.loads(json.dumps(report.to_dict()))
    by_name = {s["name"]: s for s in data["systems"]}
    assert by_name["fastest"]["ratio_vs"] == {"exact (default)": 0.5, "langchain": 0.25, "llamaindex": 0.125}
    assert (by_name["fastest"]["engine"], by_name["fastest"]["same_set"], by_name["fastest"]["spec"]) == (
        "ONNX Runtime int8",
        0.5,
        FASTEST,
    )
    assert by_name["st-onnx"] == {
        "name": "st-onnx",
        "description": "ST onnx",
        "engine": None,
        "unavailable": "not installed: optimum[onnxruntime] (see docs/bench.md)",
    }
    assert data["machine"]["cpu_model"] == "Test CPU 9000"
    console = Console(width=300, record=True)
    console.print(preset_table(report))
    text = console.export_text()
    assert "Test CPU 9000, 4 cores (8 CPUs)" in text and "same top-5 as exact (default)" in text
    lines = {line.split("│")[1].strip(): line for line in text.splitlines() if line.count("│") > 3}
    assert "4.00" in lines["fastest"] and "8.00" in lines["fastest"] and "50%" in lines["fastest"]
    assert "ONNX Runtime int8" in lines["fastest"]
    assert "not installed: optimum[onnxruntime]" in lines["st-onnx"]


def test_same_set_counts_sets_agreement_counts_order():
    data = SimpleNamespace(queries=[("q1", "a"), ("q2", "b")])
    results = {
        "exact": _result("exact", 1.0, top_ids=[["1", "2"], ["3", "4"]]),
        "fast": _result("fast", 1.0, top_ids=[["2", "1"], ["3", "5"]]),
        "st-openvino": SystemResult("st-openvino", "x", unavailable="not installed: x"),
    }
    _agreement(data, results, reference="exact")
    fast = results["fast"]
    assert (fast.agreement, fast.same_set) == (0.0, 0.5)
    assert fast.mismatches[0] == {"query_id": "q1", "query": "a", "exact": ["1", "2"], "fast": ["2", "1"]}
    assert results["st-openvino"].same_set is None and results["exact"].same_set == 1.0


# -- peers -----------------------------------------------------------------------------------------------------
def test_a_missing_or_broken_peer_library_is_a_reason(monkeypatch):
    def missing(name):
        raise ModuleNotFoundError(name)

    monkeypatch.setattr(peers_module.importlib, "import_module", missing)
    assert peers_module.peer_unavailable("st-onnx").startswith("not installed: optimum[onnxruntime]")
    assert peers_module.peer_unavailable("st-openvino-int8").startswith("not installed: optimum-intel[openvino]")

    def broken(name):
        raise ImportError("cannot import name 'is_tf_available'")

    monkeypatch.setattr(peers_module.importlib, "import_module", broken)
    reason = peers_module.peer_unavailable("st-onnx")
    assert reason.startswith("not usable: optimum[onnxruntime]") and "is_tf_available" in reason
    built = peers_module.peer_systems(["st-onnx", "langchain"], None, "ce", limit=20, top_k=5)
    assert built == {"st-onnx": reason}  # not built, and the native stacks are not its business


def test_a_peer_that_fails_to_build_says_so(monkeypatch):
    monkeypatch.setattr(peers_module, "peer_unavailable", lambda name: None)

    def fail(*args, **kwargs):
        raise OSError("export failed")

    monkeypatch.setattr(peers_module, "load_peer", fail)
    assert peers_module.peer_systems(["st-openvino"], None, "ce", limit=20, top_k=5) == {
        "st-openvino": "failed: OSError: export failed"
    }


@pytest.mark.parametrize(
    ("flags", "machine", "expected"),
    [
        ({"avx2", "avx512f", "avx512_vnni"}, "x86_64", "avx512_vnni"),
        ({"avx2", "avx512f"}, "x86_64", "avx512"),
        ({"avx2"}, "x86_64", "avx2"),
        (set(), "aarch64", "arm64"),
        ({"sse4_2"}, "x86_64", None),
    ],
)
def test_onnx_int8_config_follows_the_cpu(flags, machine, expected):
    assert peers_module.onnx_int8_config(flags, machine) == expected


def test_cpu_model_and_cores_from_lscpu():
    text = "Architecture: x86_64\nCPU(s): 8\nModel name:   Intel(R) Xeon(R) Gold 6338\n"
    text += "Core(s) per socket: 2\nSocket(s): 2\n"
    assert cpu_model_and_cores(text) == ("Intel(R) Xeon(R) Gold 6338", 4)


# -- a whole run, fake models --------------------------------------------------------------------------------
def test_preset_run_builds_a_row_per_spec(monkeypatch, tmp_path, presets):
    made = []

    def fake_build_reranker(spec):
        stages = [(FakeCE(s.backend or "onnx"), s.keep) for s in spec.stages]
        made.append(str(spec))
        return Cascade(stages)

    def fake_peers(names, recall, model, *, limit, top_k, max_length, texts):
        assert (model, limit, top_k, max_length) == ("fake-ce", 20, 5, None) and texts  # exact's pipeline
        search = lambda q: [h.id for h in recall.search(q, limit)][:top_k]  # noqa: E731
        return {"st-onnx": BuiltSystem(search, engine="ST ONNX Runtime fp32"), "st-openvino": "not installed: x"}

    monkeypatch.setattr(preset_run, "build_reranker", fake_build_reranker)
    monkeypatch.setattr(preset_run, "model_shape", lambda ce: {})
    monkeypatch.setattr(preset_run, "peer_systems", fake_peers)
    monkeypatch.setattr(preset_run, "machine_info", lambda: {"cpu_model": "Test CPU", "cores": 2, "cpu_count": 2})
    report = preset_run.run_preset_benchmark(
        pipelines=["fast", "fastest"], systems=["st-onnx", "st-openvino"], max_queries=3, max_docs=40,
        embedding_model=FakeEmbedder(), warmup=0, db=tmp_path / "db", progress=False,
    )  # fmt: skip
    assert made == [PRESETS["exact"], FAST, FASTEST]  # built before any passage was indexed
    names = [s.name for s in report.systems]
    assert names == ["exact (default)", "fast", "fastest", "st-onnx", "st-openvino"]
    assert report.reference == "exact (default)" and (report.limit, report.top_k) == (20, 5)
    rows = {s.name: s for s in report.systems}
    assert rows["fast"].engine == "ONNX Runtime int8 → ONNX Runtime fp32" and rows["fast"].spec == FAST
    assert rows["fast"].pairs == 3 * (30 + 10)  # counted from its two stages' engines
    assert rows["fastest"].engine == "ONNX Runtime int8" and rows["st-onnx"].engine == "ST ONNX Runtime fp32"
    assert rows["exact (default)"].same_set == 1.0
    assert all(0.0 <= rows[n].same_set <= 1.0 and len(rows[n].latencies_ms) == 3 for n in names[:4])
    assert rows["st-openvino"].unavailable == "not installed: x" and not rows["st-openvino"].ran
    assert rows["fast"].stage_medians_ms()["recall"] > 0


# -- the CLI -----------------------------------------------------------------------------------------------------
def test_cli_passes_every_preset_and_the_default(monkeypatch, presets):
    import twostage_integrations.bench as bench

    seen = {}

    def fake_run(dataset_dir, **kwargs):
        seen.update(kwargs)
        raise InvalidParameterError("stop here")

    monkeypatch.setattr(bench, "run_preset_benchmark", fake_run)
    result = CliRunner().invoke(app, ["bench", "--preset", "exact,fast", "--preset", "fastest", "--systems", "st-onnx"])
    assert result.exit_code == 2 and "stop here" in result.output, result.output
    assert seen["pipelines"] == ["exact", "fast", "fastest"] and seen["systems"] == ["st-onnx"]
    assert seen["default"] == default_spec()  # what `twostage query` runs with no flags
    result = CliRunner().invoke(app, ["bench", "--pipeline", "fast", "--pipeline", FASTEST])
    assert seen["pipelines"] == ["fast", FASTEST] and seen["limit"] is None  # each spec's own depth
    assert seen["long_docs"] is None
    CliRunner().invoke(app, ["bench", "--preset", "fast", "--long-docs", "max"])
    assert seen["pipelines"] == ["fast"] and seen["long_docs"] == "max"


def test_cli_limits_run_every_row_at_each_depth(monkeypatch, presets):
    import twostage_integrations.bench as bench

    depths = []

    def fake_run(dataset_dir, **kwargs):
        depths.append(kwargs["limit"])
        raise InvalidParameterError("stop here")

    monkeypatch.setattr(bench, "run_preset_benchmark", fake_run)
    result = CliRunner().invoke(app, ["bench", "--preset", "exact,fastest", "--limits", "50,100"])
    assert result.exit_code == 2 and "stop here" in result.output and depths == [50], result.output
    result = CliRunner().invoke(app, ["bench", "--preset", "exact,fast", "--limits", "50,8"])
    assert result.exit_code == 2 and "more than the 8 it gets" in result.output, result.output
    assert depths == [50]  # the bad second depth was refused before the first run


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--preset", "exact,nope"], "'nope'"),
        (["--preset", "exact", "--pipeline", "fast"], "--pipeline and --preset both"),
        (["--preset", "exact", "--limit", "5"], "--limit and --preset both set the pipeline"),
        (["--pipeline", "dense:20 > default > top_k=3"], "same top_k"),
        (["--preset", "exact", "--systems", "twostage-onnx"], "unknown here: twostage-onnx"),
        (["--preset", "fast", "--long-docs", "all"], "--long-docs must be one of first, max, top2mean"),
        (["--long-docs", "max"], "--long-docs max applies to pipeline rows: add --preset fast"),
    ],
)
def test_cli_refuses_bad_rows_before_any_work(args, message):
    result = CliRunner().invoke(app, ["bench", "--max-queries", "2", *args])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and message in " ".join(result.output.split()), result.output
