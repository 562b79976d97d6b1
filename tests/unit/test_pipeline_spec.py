"""One pipeline spec: the string grammar, its dict and TOML forms, the typed error, presets, and the stages
``TwoStagePipeline.from_spec`` builds from it. No weights: ``make_reranker`` is replaced by a recorder of fakes."""

from __future__ import annotations

import doctest
import json
import pickle

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import twostage_integrations.rerank as rerank
from twostage_integrations import TwoStagePipeline
from twostage_integrations import spec as spec_module
from twostage_integrations.cli import app
from twostage_integrations.cli.app import parse_stage
from twostage_integrations.errors import InvalidParameterError, PipelineSpecError
from twostage_integrations.recall.factory import RECALL_KINDS
from twostage_integrations.rerank.cascade import Cascade
from twostage_integrations.rerank.fusion import METHODS, FusedReranker
from twostage_integrations.rerank.onnx import BACKENDS
from twostage_integrations.spec import (
    PRESETS,
    FusionSpec,
    PipelineSpec,
    RecallSpec,
    StageSpec,
    parse_stage_token,
    resolve,
)
from twostage_integrations.testing import FakeEmbedder, FakeReranker

# -- reading and writing ------------------------------------------------------------------------------------------

EXAMPLES = {
    "dense:20 > default > top_k=5": PipelineSpec(RecallSpec("dense", 20), (StageSpec(),), None, 5),
    "bm25:50 > none > top_k=10": PipelineSpec(RecallSpec("bm25", 50), (), None, 10),
    "hybrid:100@rrf_k=60,per_arm=80 > tiny:30@backend=onnx-int8,max_length=64 > org/ce > fuse=minmax:0.5 > top_k=3": (
        PipelineSpec(
            RecallSpec("hybrid", 100, 60.0, 80),
            (StageSpec("tiny", 30, "onnx-int8", 64), StageSpec("org/ce")),
            FusionSpec("minmax", 0.5),
            3,
        )
    ),
    "dense:40 > rerankers:/p:cross-encoder:12 > /m/v1@2/ce > top_k=5": PipelineSpec(
        RecallSpec("dense", 40), (StageSpec("rerankers:/p:cross-encoder", 12), StageSpec("/m/v1@2/ce")), None, 5
    ),
}


@pytest.mark.parametrize(("text", "expected"), EXAMPLES.items())
def test_string_reads_into_the_spec_and_back(text, expected):
    spec = PipelineSpec.parse(text)
    assert spec == expected
    assert spec.to_string() == str(spec) == text  # canonical strings read back as written
    assert PipelineSpec.from_dict(spec.to_dict()) == spec
    assert PipelineSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert PipelineSpec.from_toml(spec.to_toml()) == spec


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("dense > default", "dense:20 > default > top_k=5"),  # defaults written out
        ("  bm25:7>none>top_k=3 ", "bm25:7 > none > top_k=3"),  # spaces around '>' optional
        ("dense > ce@backend=ONNX", "dense:20 > ce@backend=onnx > top_k=5"),  # backends as resolve_backend reads them
        ("hybrid:30 > ce > top_k=2 > fuse=rrf", "hybrid:30 > ce > fuse=rrf:0.9 > top_k=2"),  # settings in any order
        ("hybrid:30@rrf_k=60.0 > ce", "hybrid:30@rrf_k=60 > ce > top_k=5"),
        ("hybrid:30@rrf_k=0,per_arm=1 > none", "hybrid:30@rrf_k=0,per_arm=1 > none > top_k=5"),  # zero is a value
    ],
)
def test_other_spellings_read_into_the_canonical_string(text, canonical):
    assert PipelineSpec.parse(text).to_string() == canonical


def test_dict_form_names_every_part():
    spec = PipelineSpec.parse("hybrid:100@per_arm=50 > default:30@backend=onnx-int8 > ce > fuse=rrf:0.7 > top_k=4")
    assert spec.to_dict() == {
        "recall": {"kind": "hybrid", "limit": 100, "per_arm": 50},
        "stages": [{"model": "default", "keep": 30, "backend": "onnx-int8"}, {"model": "ce"}],
        "fusion": {"method": "rrf", "weight": 0.7},
        "top_k": 4,
    }
    # The shortest dict: recall kind and stages; the rest defaults as in the string form.
    assert PipelineSpec.from_dict({"recall": {"kind": "dense"}, "stages": [{}]}) == PipelineSpec.parse(
        "dense > default"
    )


def test_toml_form_reads_tables_written_by_hand():
    text = """
top_k = 3

[recall]
kind = "hybrid"
limit = 60

[[stages]]
model = "tiny"
keep = 20
max_length = 64

[[stages]]
model = "default"

[fusion]
method = "rrf"
weight = 0.8
"""
    assert PipelineSpec.from_toml(text) == PipelineSpec.parse(
        "hybrid:60 > tiny:20@max_length=64 > default > fuse=rrf:0.8 > top_k=3"
    )
    assert PipelineSpec.from_toml('top_k = 2\nstages = []\n[recall]\nkind = "bm25"\n').stages == ()


_NAME_CHARS = "abcXYZ019/:-_.@=,> é\t"


@st.composite
def specs(draw) -> PipelineSpec:
    """Any valid spec: keeps never above what a stage gets, top_k never above what the last step passes on."""
    kind = draw(st.sampled_from(RECALL_KINDS))
    limit = draw(st.integers(1, 1000))
    hybrid = kind == "hybrid"
    rrf_k = draw(st.none() | st.floats(0, 1e4, allow_nan=False)) if hybrid else None
    per_arm = draw(st.none() | st.integers(1, 1000)) if hybrid else None
    passed, stages = limit, []
    for _ in range(draw(st.integers(0, 3))):
        model = draw(st.none() | st.sampled_from(["org/ce", "cohere:rerank-v3.5"]) | st.text(_NAME_CHARS, min_size=1))
        keep = draw(st.none() | st.integers(1, passed))
        passed = keep or passed
        try:
            stage = StageSpec(
                model, keep, draw(st.none() | st.sampled_from(BACKENDS)), draw(st.none() | st.integers(1, 4096))
            )
        except PipelineSpecError:
            assume(False)  # a name the grammar would misread: refused, so never part of a spec
        stages.append(stage)
    fusion = draw(st.none() | st.builds(FusionSpec, st.sampled_from(METHODS), st.floats(0, 1))) if stages else None
    return PipelineSpec(RecallSpec(kind, limit, rrf_k, per_arm), tuple(stages), fusion, draw(st.integers(1, passed)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(specs())
def test_every_spec_round_trips_through_every_form(spec):
    assert PipelineSpec.parse(spec.to_string()) == spec
    assert PipelineSpec.parse(spec.to_string()).to_string() == spec.to_string()
    assert PipelineSpec.from_dict(spec.to_dict()) == spec
    assert PipelineSpec.from_dict(spec.to_dict()).to_dict() == spec.to_dict()
    assert PipelineSpec.from_toml(spec.to_toml()) == spec


@settings(max_examples=300, deadline=None)
@given(st.text(_NAME_CHARS, min_size=1))
def test_a_model_name_is_refused_or_reads_back_as_itself(name):
    try:
        stage = StageSpec(name, 3, "onnx", 64)
    except PipelineSpecError:
        return
    assert StageSpec.parse(stage.to_token()) == stage
    assert parse_stage(stage.to_token()) == (stage.model or "default", 3, {"backend": "onnx", "max_length": 64})


# -- refusing -------------------------------------------------------------------------------------------------

BAD_STRINGS = [
    # (spec, the token the error names, why)
    ("", "", "empty pipeline spec"),
    ("   ", "   ", "empty pipeline spec"),
    ("dense:20 > ce >", "dense:20 > ce >", "empty step"),
    ("> dense:20 > ce", "> dense:20 > ce", "empty step"),
    ("dense:20 >> ce", "dense:20 >> ce", "empty step"),
    ("sparse:20 > ce", "sparse", "starts with its recall"),
    ("ce:30 > ce", "ce", "starts with its recall"),
    ("dense:x > ce", "x", "limit must be a whole number"),
    ("dense:0 > ce", "0", "limit must be a whole number"),
    ("dense:-5 > ce", "-5", "limit must be a whole number"),
    ("dense:20", "dense:20", "names its rerank stages"),
    ("dense:20 > none > ce", "dense:20 > none > ce", "'none' alone"),
    ("dense:20@rrf_k=60 > ce", "rrf_k", "tunes hybrid recall"),
    ("bm25:20@per_arm=5 > ce", "per_arm", "tunes hybrid recall"),
    ("hybrid:20@rrf_k=big > ce", "big", "rrf_k must be a number"),
    ("hybrid:20@per_arm=0 > ce", "0", "per_arm must be a whole number"),
    ("hybrid:20@k=60 > ce", "k=60", "options after @ are rrf_k=..., per_arm=..."),
    ("dense:20 > ce:0", "0", "keep must be a whole number"),
    ("dense:20 > ce:30", "ce:30", "keeps more than the 20"),
    ("dense:20 > ce:10 > ce:15", "ce:15", "keeps more than the 10"),
    ("dense:20 > ce@device=cpu", "device=cpu", "options after @ are backend=..., max_length=..."),
    ("dense:20 > ce@backend=onnx,backend=torch", "backend=torch", "each once"),
    ("dense:20 > ce@backend=onnx,", "", "options after @"),
    ("dense:20 > ce@max_length=short", "short", "max_length must be a number of tokens"),
    ("dense:20 > ce@max_length=0", "0", "max_length must be a number of tokens"),
    ("dense:20 > ce@backend=gpu", "gpu", "backend must be one of torch, onnx, onnx-int8"),
    ("dense:20 > :30", "", "starts with its model"),
    ("dense:20 > None", "None", "are keywords"),
    ("dense:20 > ce > fuse=avg:0.5", "avg", "method must be one of rrf, minmax"),
    ("dense:20 > ce > fuse=rrf:1.5", 1.5, "weight must be between 0 and 1"),
    ("dense:20 > ce > fuse=rrf:high", "high", "weight must be a number"),
    ("dense:20 > none > fuse=rrf:0.9", "fuse=rrf:0.9", "fusion needs a rerank stage"),
    ("dense:20 > ce > top_k=0", "0", "top_k must be a whole number"),
    ("dense:20 > ce > top_k=5.5", "5.5", "top_k must be a whole number"),
    ("dense:20 > ce > top_k=30", 30, "top_k is more than the 20"),
    ("dense:40 > ce:3 > top_k=5", 5, "top_k is more than the 3"),
    ("dense:20 > ce > topk=3", "topk=3", "fuse=METHOD:WEIGHT and top_k=N"),
    ("dense:20 > ce > top_k=3 > top_k=4", "top_k=4", "once each"),
    ("dense:20 > top_k=3 > ce", "ce", "stages come before"),
]


@pytest.mark.parametrize(("text", "token", "why"), BAD_STRINGS)
def test_every_bad_token_is_refused_by_name(text, token, why):
    with pytest.raises(PipelineSpecError) as caught:
        resolve(text)
    message = str(caught.value)
    assert why in message and f"got {token!r}" in message
    assert "\n" not in message and "; e.g. " in message
    example = message.rsplit("; e.g. ", 1)[1]
    if ">" in example:  # a whole-spec example must itself be valid
        PipelineSpec.parse(example)
    assert isinstance(caught.value, InvalidParameterError) and caught.value.token == token


@pytest.mark.parametrize(
    ("data", "token", "why"),
    [
        ([], [], "pipeline must be a table"),
        ({"recall": {"kind": "dense"}}, "stages", "missing key"),
        ({"stages": []}, "recall", "missing key"),
        ({"recall": {"kind": "dense"}, "stages": [], "topk": 5}, "topk", "unknown key"),
        ({"recall": {"limit": 20}, "stages": []}, "kind", "recall: missing key"),
        ({"recall": {"kind": "dense", "depth": 20}, "stages": []}, "depth", "recall: unknown key"),
        ({"recall": {"kind": "dense", "limit": "20"}, "stages": []}, "20", "recall: limit must be a whole number"),
        ({"recall": {"kind": "dense"}, "stages": "ce"}, "ce", "stages must be a list"),
        ({"recall": {"kind": "dense"}, "stages": [{"model": "ce", "keep": True}]}, True, "stages[0]: keep must be"),
        ({"recall": {"kind": "dense"}, "stages": [{}, {"engine": "onnx"}]}, "engine", "stages[1]: unknown key"),
        ({"recall": {"kind": "dense"}, "stages": [{"backend": "cuda"}]}, "cuda", "stages[0]: backend must be"),
        ({"recall": {"kind": "dense"}, "stages": [{"model": 3}]}, 3, "stages[0]: a stage's model"),
        ({"recall": {"kind": "dense"}, "stages": [{}], "fusion": {"weight": -1}}, -1, "fusion: weight must be"),
        ({"recall": {"kind": "dense"}, "stages": [], "top_k": 0}, 0, "top_k must be a whole number"),
    ],
)
def test_dict_form_refuses_bad_keys_and_values_by_path(data, token, why):
    with pytest.raises(PipelineSpecError) as caught:
        PipelineSpec.from_dict(data)
    assert why in str(caught.value) and f"got {token!r}" in str(caught.value)
    assert "\n" not in str(caught.value) and '"recall": {"kind"' in caught.value.example


def test_toml_that_does_not_parse_names_its_line():
    with pytest.raises(PipelineSpecError, match=r"does not parse.*got 'limit = twenty'") as caught:
        PipelineSpec.from_toml('top_k = 5\nstages = []\n[recall]\nkind = "dense"\nlimit = twenty\n')
    assert "\n" not in str(caught.value)
    with pytest.raises(PipelineSpecError, match=r"pipeline TOML: recall: unknown key.*got 'depth'"):
        PipelineSpec.from_toml('stages = []\n[recall]\nkind = "dense"\ndepth = 20\n')


def test_the_error_survives_pickling():
    with pytest.raises(PipelineSpecError) as caught:
        resolve("dense:20 > ce:0")
    copy = pickle.loads(pickle.dumps(caught.value))
    assert str(copy) == str(caught.value) and copy.token == "0"


def _beir(tmp_path):
    """A one-query BEIR folder (eval reads it before it makes its stages)."""
    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text('{"_id": "d1", "title": "", "text": "aspirin"}\n')
    (folder / "queries.jsonl").write_text('{"_id": "q1", "text": "aspirin?"}\n')
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    return folder


def test_eval_refuses_a_bad_stage_with_one_line_and_exit_2(tmp_path):
    result = CliRunner().invoke(app, ["eval", str(_beir(tmp_path)), "--stage", "ce:30@backend=gpu"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --stage 'ce:30@backend=gpu'") and "got 'gpu'" in lines[0]


# -- presets and resolve --------------------------------------------------------------------------------------


def test_exact_preset_is_one_exact_stage_over_the_default_recall(fake_recall):
    exact = resolve("exact")
    default = TwoStagePipeline(fake_recall)
    assert exact.to_string() == PRESETS["exact"]
    assert (exact.recall.kind, exact.recall.limit, exact.top_k) == ("hybrid", default.limit, default.top_k)
    assert exact.stages == (StageSpec(model=None, keep=None, backend=None, max_length=None),)  # make_reranker()
    assert exact.fusion is None


def test_resolve_takes_every_spelling(tmp_path):
    spec = PipelineSpec.parse("bm25:30 > ce:10 > top_k=3")
    file = tmp_path / "pipeline.toml"
    file.write_text(spec.to_toml(), encoding="utf-8")
    assert resolve(spec) is spec
    assert resolve(spec.to_dict()) == resolve(spec.to_string()) == resolve(file) == resolve(str(file)) == spec
    with pytest.raises(
        PipelineSpecError, match=r"unknown pipeline preset \(presets: exact, fast, long-docs\), got 'fastest'"
    ):
        resolve("fastest")
    with pytest.raises(PipelineSpecError, match="no such pipeline TOML file"):
        resolve(tmp_path / "missing.toml")
    with pytest.raises(PipelineSpecError, match="got 'int'"):
        resolve(5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "token",
    ["tiny:30", "ce", "/models/cut-2:12", "rerankers:/path/to/model:cross-encoder", "cohere:rerank-v3.5",
     "ce:30@backend=onnx-int8,max_length=64", "/m/ce@max_length=96", "/m/v1@2/ce:20"],
)  # fmt: skip
def test_eval_stage_is_a_shorthand_of_a_spec_stage(token):
    model, keep, options = parse_stage(token)
    assert parse_stage_token(token) == (model, keep, options)
    assert StageSpec.parse(token) == StageSpec(model, keep, **options)


def test_spec_docstring_examples_run():
    result = doctest.testmod(spec_module)
    assert result.attempted > 0 and result.failed == 0


# -- building -------------------------------------------------------------------------------------------------


@pytest.fixture
def made(monkeypatch) -> list[tuple[str | None, dict]]:
    """Every ``make_reranker`` call as ``(model, keywords)``; each returns a fresh FakeReranker."""
    calls: list[tuple[str | None, dict]] = []

    def fake_make_reranker(model=None, **kwargs):
        calls.append((model, kwargs))
        return FakeReranker()

    monkeypatch.setattr(rerank, "make_reranker", fake_make_reranker)
    return calls


def _stage_list(pipe: TwoStagePipeline, made: list) -> list[tuple]:
    """``(model, keywords, keep)`` per stage of the pipeline's cascade, from what was asked of make_reranker."""
    assert isinstance(pipe.reranker, Cascade) and len(pipe.reranker.stages) == len(made)
    return [(model, kwargs, keep) for (model, kwargs), (_, keep) in zip(made, pipe.reranker.stages, strict=True)]


def test_from_spec_builds_the_stages_the_spec_names(made, fake_recall):
    text = "dense:40 > tiny:20@backend=onnx-int8,max_length=64 > org/ce:10 > default > top_k=4"
    pipe = TwoStagePipeline.from_spec(text, fake_recall, rerank_backend="torch")
    assert _stage_list(pipe, made) == [
        ("tiny", {"backend": "onnx-int8", "max_length": 64}, 20),  # a stage's own options win
        ("org/ce", {"backend": "torch"}, 10),  # the others get rerank_backend
        (None, {"backend": "torch"}, None),  # `default`: make_reranker(None), as `twostage query` does
    ]
    assert (pipe.limit, pipe.top_k, pipe.spec) == (40, 4, PipelineSpec.parse(text))
    assert pipe.recall is fake_recall  # a recall passed in replaces the spec's


def test_from_spec_fuses_the_last_stage_and_searches(made, fake_recall):
    fake_recall.add_texts(["aspirin lowers stroke risk", "paris is in france", "aspirin and headaches", "cats"])
    pipe = TwoStagePipeline.from_spec(
        {**resolve("dense:4 > ce > top_k=2").to_dict(), "fusion": {"weight": 0.6}}, fake_recall
    )
    (fused, keep), = pipe.reranker.stages  # fmt: skip
    assert isinstance(fused, FusedReranker) and (fused.weight, fused.method, keep) == (0.6, "rrf", None)
    hits = pipe.search("aspirin stroke")
    assert len(hits) == 2 and hits[0].text == "aspirin lowers stroke risk"


def test_from_spec_without_rerank_and_with_presets(made, fake_recall):
    assert TwoStagePipeline.from_spec("dense:20 > none > top_k=3", fake_recall).reranker is None
    assert made == []
    pipe = TwoStagePipeline.from_spec("exact", fake_recall)
    assert _stage_list(pipe, made) == [(None, {"backend": None}, None)]
    assert pipe.spec == resolve("exact") and (pipe.limit, pipe.top_k) == (20, 5)


@pytest.mark.parametrize(("kind", "options"), [("bm25", ""), ("hybrid", "@rrf_k=10,per_arm=30"), ("dense", "")])
def test_from_spec_builds_the_recall_kind_over_the_collection(made, tmp_path, kind, options):
    pipe = TwoStagePipeline.from_spec(
        f"{kind}:40{options} > ce", collection="coll", db=tmp_path / "db", embedding_model=FakeEmbedder()
    )
    assert type(pipe.recall).__name__ == {"dense": "ChromaRecall", "bm25": "BM25Recall", "hybrid": "HybridRecall"}[kind]
    if kind == "hybrid":
        assert (pipe.recall.k, pipe.recall.candidates_per_arm) == (10.0, 30)


def test_from_spec_needs_one_source_of_recall(made, fake_recall):
    with pytest.raises(InvalidParameterError, match="recall object or a collection"):
        TwoStagePipeline.from_spec("exact")
    with pytest.raises(InvalidParameterError, match="either a recall object or collection"):
        TwoStagePipeline.from_spec("exact", fake_recall, collection="coll")
    with pytest.raises(PipelineSpecError, match="got 'fastest'"):
        TwoStagePipeline.from_spec("fastest", fake_recall)


def test_eval_stages_build_what_the_spec_builds(made, fake_recall, tmp_path, monkeypatch):
    """``eval --stage A --stage B --rerank-backend X`` asks make_reranker for the same stages as the spec
    ``dense:LIMIT > A > B`` given ``rerank_backend=X``. Eval is stopped once its stages are made."""
    folder = _beir(tmp_path)
    stages = ["tiny:30@backend=onnx-int8,max_length=64", "org/ce:10"]
    monkeypatch.setattr("twostage_integrations.evaluation.evaluate", _stop)
    args = ["eval", str(folder), "--limit", "40", "--rerank-backend", "onnx"]
    result = CliRunner().invoke(app, [*args, *(x for s in stages for x in ("--stage", s))])
    assert result.exit_code == 2 and "stop here" in result.output, result.output
    from_eval = list(made)
    made.clear()
    TwoStagePipeline.from_spec(" > ".join(["dense:40", *stages]), fake_recall, rerank_backend="onnx")
    assert made == from_eval == [("tiny", {"backend": "onnx-int8", "max_length": 64}), ("org/ce", {"backend": "onnx"})]


def _stop(*args, **kwargs):
    raise InvalidParameterError("stop here")
