"""``twostage bench --stage``: the shared MODEL[:KEEP] parser, which systems run, the KEEP checks, and the
cascade's per-stage numbers. No weights: every check here fails before a model is loaded."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from twostage_integrations.bench import (
    CASCADE,
    SYSTEMS,
    BenchReport,
    SystemResult,
    check_stages,
    check_systems,
)
from twostage_integrations.cli import app
from twostage_integrations.cli.app import parse_stage
from twostage_integrations.errors import InvalidParameterError


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("tiny:30", ("tiny", 30, {})),
        ("ce", ("ce", None, {})),
        ("/models/cut-2:12", ("/models/cut-2", 12, {})),
        ("rerankers:/path/to/model:cross-encoder", ("rerankers:/path/to/model:cross-encoder", None, {})),
        ("cohere:rerank-v3.5", ("cohere:rerank-v3.5", None, {})),
        ("ce:30@backend=onnx-int8,max_length=64", ("ce", 30, {"backend": "onnx-int8", "max_length": 64})),
        ("/m/ce@max_length=96", ("/m/ce", None, {"max_length": 96})),
        ("/m/v1@2/ce:20", ("/m/v1@2/ce", 20, {})),  # an @ without options belongs to the path
    ],
)
def test_parse_stage(spec, expected):
    assert parse_stage(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("ce:30@max_len=64", "options after @ are backend=..., max_length=..."),
        ("ce:30@backend=", "got 'backend='"),
        ("ce:30@max_length=short", "max_length must be a number"),
    ],
)
def test_parse_stage_rejects_bad_options(spec, message):
    with pytest.raises(InvalidParameterError, match=re.escape(message)):
        parse_stage(spec)


def test_eval_and_bench_share_the_parser():
    from twostage_integrations.cli import bench, evaluate

    assert bench.parse_stage is evaluate.parse_stage is parse_stage


def test_cascade_system_needs_stages():
    with pytest.raises(InvalidParameterError, match="--stage MODEL"):
        check_systems(["langchain", CASCADE])


def test_stages_add_the_cascade_system():
    assert check_systems(None) == list(SYSTEMS)  # no stages: not part of "all"
    assert check_systems(None, cascade=True) == [*SYSTEMS, CASCADE]
    assert check_systems(["langchain"], cascade=True) == ["twostage", "langchain", CASCADE]
    assert check_systems([CASCADE, "llamaindex"], cascade=True) == ["twostage", CASCADE, "llamaindex"]
    with pytest.raises(InvalidParameterError, match="haystack"):
        check_systems(["haystack"], cascade=True)


def test_stage_keeps_are_checked_against_limit_and_top_k():
    assert check_stages(None, [20], 5) == []
    assert check_stages([("tiny", 20), "ce"], [20, 50], 5) == [("tiny", 20, {}), ("ce", None, {})]
    assert check_stages([("tiny", 20, {"max_length": 64})], [20], 5) == [("tiny", 20, {"max_length": 64})]
    with pytest.raises(InvalidParameterError, match="unknown option"):
        check_stages([("tiny", 20, {"device": "cpu"})], [20], 5)
    with pytest.raises(InvalidParameterError, match=r"stage 1 \(tiny:30\).*--limit 20"):
        check_stages([("tiny", 30), ("ce", None)], [50, 20], 5)  # the smallest of --limits counts
    with pytest.raises(InvalidParameterError, match=r"stage 2 \(ce:3\).*--top-k 5"):
        check_stages([("tiny", 10), ("ce", 3)], [20], 5)
    with pytest.raises(InvalidParameterError, match="keep of cascade stage 1"):
        check_stages([("tiny", 0)], [20], 5)
    with pytest.raises(InvalidParameterError, match="non-empty"):
        check_stages([], [20], 5)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--systems", f"langchain,{CASCADE}"], "needs its stages"),
        (["--stage", "tiny:30", "--stage", "ce", "--limit", "20"], "stage 1 (tiny:30) keeps 30"),
        (["--stage", "tiny:30", "--stage", "ce", "--limits", "50,10"], "--limit 10"),
        (["--stage", "cohere:rerank-v3.5"], "pass --stage cohere:rerank-v3.5 with a cross-encoder"),
    ],
)
def test_cli_rejects_bad_stages_before_any_work(args, message):
    result = CliRunner().invoke(app, ["bench", "--max-queries", "2", *args])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and message in " ".join(result.output.split())


def _result(name: str, median: float, **kwargs) -> SystemResult:
    return SystemResult(name, SYSTEMS.get(name, name), latencies_ms=[median, median], pairs=10, **kwargs)


def test_cascade_row_numbers():
    cascade = _result(
        CASCADE,
        30.0,
        recall_ms=[2.0, 4.0],
        rerank_ms=[20.0, 22.0],
        cascade_ms=[[5.0, 7.0], [15.0, 15.0]],
        cascade=[{"model": "tiny", "keep": 6}, {"model": "ce", "keep": None}],
        tokens=1000,
        engine_s=0.5,
        model_shape={},  # two models of different shapes: no single FLOP estimate
    )
    reference = _result("twostage", 60.0, recall_ms=[3.0, 3.0], rerank_ms=[50.0, 50.0], tokens=1000, engine_s=1.0)
    report = BenchReport(
        "d", 10, 2, 10, 3, 1, 0, "emb", "ce", 0.0, [reference, cascade, _result("langchain", 120.0)],
        model_shape={"layers": 6, "hidden": 384, "intermediate": 1536},
    )  # fmt: skip
    assert cascade.stage_medians_ms() == {"recall": 3.0, "rerank": 21.0, "rerank 1": 6.0, "rerank 2": 15.0}
    assert reference.stage_medians_ms() == {"recall": 3.0, "rerank": 50.0}
    assert report.gflops(cascade) is None and report.gflops(reference) is not None
    row = {s["name"]: s for s in report.to_dict()["systems"]}[CASCADE]
    assert row["ratio_vs"] == {"twostage": 0.5, "langchain": 0.25, "llamaindex": None}
    assert row["cascade"] == [{"model": "tiny", "keep": 6}, {"model": "ce", "keep": None}]


def _one_query_beir(tmp_path):
    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text('{"_id": "d1", "title": "", "text": "aspirin"}\n')
    (folder / "queries.jsonl").write_text('{"_id": "q1", "text": "aspirin?"}\n')
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    return folder


def test_eval_gives_each_stage_its_own_engine_options(tmp_path, monkeypatch):
    """``eval --stage``: a stage's ``@`` options reach that stage's reranker only; the others get
    --rerank-backend. Stopped after the rerankers are made (no weights, no index)."""
    import twostage_integrations.rerank as rerank

    folder = _one_query_beir(tmp_path)
    made: list[tuple[str, dict]] = []

    def fake_make_reranker(model, **kwargs):
        made.append((model, kwargs))
        if len(made) == 2:
            raise InvalidParameterError("stop here")
        return object()

    monkeypatch.setattr(rerank, "make_reranker", fake_make_reranker)
    args = ["eval", str(folder), "--rerank-backend", "onnx", "--limit", "40"]
    args += ["--stage", "ce:30@backend=onnx-int8,max_length=64", "--stage", "ce"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "stop here" in result.output, result.output
    assert made == [("ce", {"backend": "onnx-int8", "max_length": 64}), ("ce", {"backend": "onnx"})]


@pytest.mark.parametrize("model", ["cohere:rerank-v3.5", "rerank-2.5"])
def test_eval_refuses_a_token_limit_on_hosted_stages(tmp_path, model):
    folder = _one_query_beir(tmp_path)
    result = CliRunner().invoke(app, ["eval", str(folder), "--stage", f"{model}@max_length=64"])
    assert result.exit_code == 2 and "applies to local cross-encoders only" in result.output, result.output
