"""One pipeline spec, every entry point: the CLI (query, demo, eval, bench, serve), ``TwoStagePipeline.from_spec``,
the LangChain retriever and compressor and the LlamaIndex postprocessor and retriever build the same stages from
one spec, say which spec ran, and refuse a bad token (CLI: one ``error:`` line, exit 2).

No weights: ``spec.build.make_reranker`` is replaced by a recorder of FakeRerankers named after their model, and
Chroma embeds with the FakeEmbedder."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from twostage_integrations import TwoStagePipeline
from twostage_integrations.cli import app
from twostage_integrations.errors import InvalidParameterError, PipelineSpecError
from twostage_integrations.recall.chroma import ChromaRecall
from twostage_integrations.spec import PRESETS, PipelineSpec, build
from twostage_integrations.testing import FakeEmbedder, FakeReranker

runner = CliRunner()
# One stage (serve hosts one cross-encoder) and several (a cascade, fused); hub-id-like names: nothing is read.
ONE = "dense:4 > org/ce@backend=onnx-int8,max_length=64 > top_k=2"
MANY = "hybrid:6@rrf_k=10 > org/tiny:4@backend=onnx-int8,max_length=32 > org/ce > fuse=rrf:0.8 > top_k=2"
NOTES = {
    "aspirin.md": "Aspirin lowers the risk of a second stroke in adults who already had one.",
    "statins.md": "Statins lower LDL cholesterol and cut heart attacks in people at high risk.",
    "sleep.md": "Adults who sleep less than six hours a night have more strokes.",
    "coffee.md": "Coffee does not raise the risk of stroke in most adults.",
}


@pytest.fixture
def made(monkeypatch) -> list[tuple[str | None, dict]]:
    """Every stage a spec builds, as ``(model, options set)``; each a FakeReranker named after its model."""
    calls: list[tuple[str | None, dict]] = []

    def fake_make_reranker(model=None, **kwargs):
        calls.append((model, {k: v for k, v in kwargs.items() if v is not None}))
        reranker = FakeReranker()
        reranker.name = model or "default"
        return reranker

    monkeypatch.setattr(build, "make_reranker", fake_make_reranker)
    return calls


@pytest.fixture
def db(tmp_path, monkeypatch) -> str:
    """The notes ingested into collection `notes` of a fresh embedded Chroma, embedded with the FakeEmbedder."""
    import twostage_integrations.recall.chroma as chroma

    monkeypatch.setattr(chroma, "as_embedder", lambda model=None: FakeEmbedder())
    (tmp_path / "notes").mkdir()
    for name, text in NOTES.items():
        (tmp_path / "notes" / name).write_text(text)
    path = str(tmp_path / "db")
    result = runner.invoke(app, ["ingest", str(tmp_path / "notes"), "-c", "notes", "--db", path])
    assert result.exit_code == 0, result.output
    return path


def cli_query(db: str, *args: str):
    return runner.invoke(app, ["query", "aspirin stroke", "-c", "notes", "--db", db, "--json", *args])


def _without(calls: list[tuple[str | None, dict]], *keys: str) -> list[tuple[str | None, dict]]:
    return [(model, {k: v for k, v in options.items() if k not in keys}) for model, options in calls]


# -- the same stages everywhere ----------------------------------------------------------------------------------
@pytest.mark.parametrize("text", [ONE, MANY])
def test_every_entry_point_builds_the_same_stages(text, made, db):
    pytest.importorskip("langchain_core")
    pytest.importorskip("llama_index.core")
    if text == MANY:
        pytest.importorskip("bm25s")
    from twostage_integrations import langchain as lc
    from twostage_integrations import llama_index as li

    spec = PipelineSpec.parse(text)
    built: dict[str, tuple[list, str]] = {}  # entry point -> (make_reranker calls, stage 2's name with its keeps)

    def record(entry: str, name: str) -> None:
        built[entry] = (list(made), name)
        made.clear()

    result = cli_query(db, "--pipeline", text)
    assert result.exit_code == 0, result.output
    record("cli query", json.loads(result.stdout)["rerank_model"])
    pipe = TwoStagePipeline.from_spec(text, collection="notes", db=db)
    record("from_spec", pipe.reranker.name)
    retriever = lc.TwoStageRetriever.from_collection("notes", path=db, pipeline=text)
    record("langchain retriever", retriever.pipeline.reranker.name)
    compressor = lc.TwoStageCompressor(pipeline=text)
    record("langchain compressor", compressor.reranker.name)
    post = li.TwoStageRerank(pipeline=spec)
    record("llama_index postprocessor", post.model)
    assert len({json.dumps(v) for v in built.values()}) == 1, built
    calls, name = built["from_spec"]
    assert [model for model, _ in calls] == [s.model for s in spec.stages]
    assert [options for _, options in calls] == [s.options for s in spec.stages]  # backend, max_length
    stages, _, fused = name.partition("+")  # "org/tiny[4] → org/ce+rrf(0.8)": the keeps and the fusion too
    assert stages == " → ".join(f"{s.model}" + (f"[{s.keep}]" if s.keep else "") for s in spec.stages)
    assert fused == ("" if spec.fusion is None else f"{spec.fusion.method}({spec.fusion.weight:g})")
    assert (retriever.pipeline.limit, retriever.pipeline.top_k, compressor.top_n, post.top_n) == (
        spec.recall.limit,
        spec.top_k,
        spec.top_k,
        spec.top_k,
    )
    if text == ONE:  # serve hosts stage 2: the same cross-encoder, with its backend and max_length
        from twostage_integrations.cli import serve

        stage = serve.served_stage(spec)
        serve._loader(serve._local_model_name(stage.model), None, stage, 0)()
        assert _without(made, "batch_size") == calls


def test_cli_options_are_read_as_the_spec_they_mean(made, db):
    result = cli_query(db, "--limit", "3", "--top-k", "2", "--rerank-model", "org/ce", "--rerank-backend", "torch")
    assert result.exit_code == 0, result.output
    # hybrid: the default stage 1 (issue 22)
    assert json.loads(result.stdout)["pipeline"] == "hybrid:3 > org/ce@backend=torch > top_k=2"
    assert made == [("org/ce", {"backend": "torch"})]
    no_rerank = cli_query(db, "--no-rerank", "--limit", "3", "--top-k", "1")
    assert json.loads(no_rerank.stdout)["pipeline"] == "hybrid:3 > none > top_k=1"
    dense = cli_query(db, "--recall", "dense", "--no-rerank", "--limit", "3", "--top-k", "1")
    assert json.loads(dense.stdout)["pipeline"] == "dense:3 > none > top_k=1"

    fused = cli_query(db, "--limit", "3", "--rerank-model", "org/ce", "--fusion-weight", "0.7", "--top-k", "2")
    assert json.loads(fused.stdout)["pipeline"] == "hybrid:3 > org/ce > fuse=rrf:0.7 > top_k=2", fused.output
    minmax = cli_query(db, "--limit", "3", "--fusion-weight", "1", "--fusion-method", "minmax", "--top-k", "2")
    assert json.loads(minmax.stdout)["pipeline"].endswith("> fuse=minmax:1 > top_k=2"), minmax.output
    for bad in (["--fusion-weight", "1.5"], ["--fusion-weight", "half"], ["--no-rerank", "--fusion-weight", "0.5"]):
        refused = cli_query(db, *bad)
        assert refused.exit_code == 2 and refused.stderr.count("error:") == 1, (bad, refused.output)


def test_query_json_names_the_spec_or_preset_that_ran(made, db):
    for args, expected in [(["--pipeline", ONE], PipelineSpec.parse(ONE)), (["--preset", "exact"], None)]:
        result = cli_query(db, *args)
        assert result.exit_code == 0, result.output
        payload = json.loads(result.stdout)
        assert payload["pipeline"] == str(expected or PipelineSpec.parse(PRESETS["exact"]))
        assert len(payload["hits"]) == min(len(NOTES), int(payload["pipeline"].rsplit("top_k=", 1)[1]))


def test_no_stage_option_runs_the_default_presets_stages(made, db, monkeypatch):
    from twostage_integrations.spec import presets

    cascade = "hybrid:20 > default:3@backend=onnx-int8,max_length=64 > default > top_k=3"
    monkeypatch.setitem(presets.PRESETS, "test-default", cascade)
    monkeypatch.setattr(presets, "DEFAULT_PRESET", "test-default")
    monkeypatch.delenv("TWOSTAGE_RERANK_BACKEND", raising=False)
    plain = cli_query(db, "--limit", "4", "--top-k", "2")
    assert plain.exit_code == 0, plain.output
    assert (
        json.loads(plain.stdout)["pipeline"]
        == "hybrid:4 > default:3@backend=onnx-int8,max_length=64 > default > top_k=2"
    )
    wider = cli_query(db, "--top-k", "4")  # a prefilter keeping fewer than --top-k keeps --top-k
    assert json.loads(wider.stdout)["pipeline"].startswith("hybrid:20 > default:4@"), wider.output
    windows = cli_query(db, "--long-docs", "max")  # applied to every stage of the preset
    assert json.loads(windows.stdout)["pipeline"].count("long_docs=max") == 2, windows.output
    # An engine the user names (flag or environment) or a model: one stage of it, as asked.
    assert json.loads(cli_query(db, "--rerank-backend", "torch").stdout)["pipeline"] == (
        "hybrid:20 > default@backend=torch > top_k=5"
    )
    assert json.loads(cli_query(db, "--rerank-model", "org/ce").stdout)["pipeline"] == "hybrid:20 > org/ce > top_k=5"
    monkeypatch.setenv("TWOSTAGE_RERANK_BACKEND", "torch")
    assert json.loads(cli_query(db).stdout)["pipeline"] == "hybrid:20 > default > top_k=5"
    monkeypatch.delenv("TWOSTAGE_RERANK_BACKEND")
    monkeypatch.setenv("TWOSTAGE_RERANK_MODEL", "rerank-v3.5")  # a hosted default model takes no engine options
    assert json.loads(cli_query(db).stdout)["pipeline"] == "hybrid:20 > default > top_k=5"


def test_pipeline_from_a_toml_file(made, db, tmp_path):
    file = tmp_path / "pipe.toml"
    file.write_text(PipelineSpec.parse(ONE).to_toml())
    result = cli_query(db, "--pipeline", str(file))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["pipeline"] == str(PipelineSpec.parse(ONE))


# -- refusals: one error line, exit 2 ----------------------------------------------------------------------------
COMMANDS = {  # each fails before touching its --db (a path under the test's tmp_path)
    "query": ["query", "aspirin", "-c", "notes", "--db"],
    "demo": ["demo", "--db"],
    "eval": ["eval", ".", "--db"],
    "bench": ["bench", "--db"],
    "serve": ["serve", "--port", "0", "--api-key"],  # serve has no --db; an argument-taking option instead
}


def _one_error_line(result, *words: str) -> str:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(
    "args, words",
    [
        (["--pipeline", "dense:0 > default"], ["limit", "'0'"]),
        (["--pipeline", "dense:20 > ce:3@backend=fast > top_k=2"], ["backend", "'fast'"]),
        (["--pipeline", "vector:20 > default"], ["recall", "'vector'"]),
        (["--pipeline", "dense:20 > default > topk=3"], ["'topk=3'"]),
        (["--preset", "fastest-ever"], ["preset", "'fastest-ever'"]),
        (["--pipeline", "dense:20 > default", "--preset", "exact"], ["--pipeline", "--preset"]),
    ],
)
def test_every_command_refuses_a_bad_spec_in_one_line(command, args, words, made, tmp_path):
    result = runner.invoke(app, [*COMMANDS[command], str(tmp_path / "db"), *args])
    _one_error_line(result, *words)
    assert made == []  # nothing built


@pytest.mark.parametrize(
    "command, option",
    [
        ("query", ["--limit", "5"]),
        ("query", ["--top-k", "3"]),
        ("query", ["--rerank-model", "org/ce"]),
        ("query", ["--no-rerank"]),
        ("query", ["--recall", "bm25"]),
        ("demo", ["--rerank-backend", "torch"]),
        ("eval", ["--stage", "org/ce:5"]),
        ("eval", ["--fusion-weight", "0.5"]),
        ("bench", ["--limit", "10"]),
        ("serve", ["--model", "org/ce"]),
    ],
)
def test_a_spec_and_a_pipeline_option_are_refused_together(command, option, made, tmp_path):
    for spec in (["--pipeline", ONE], ["--preset", "exact"]):
        result = runner.invoke(app, [*COMMANDS[command], str(tmp_path / "db"), *option, *spec])
        _one_error_line(result, option[0], spec[0])
    assert made == []


@pytest.mark.parametrize("command", ["serve"])
def test_serve_and_bench_refuse_a_spec_they_cannot_run(command, made, tmp_path):
    result = runner.invoke(app, [*COMMANDS[command], str(tmp_path / "db"), "--pipeline", MANY])
    _one_error_line(result, "one cross-encoder", str(PipelineSpec.parse(MANY)))


def test_bench_times_any_spec_as_a_row(made, tmp_path):
    # issue 22: bench runs every --pipeline as a row (a cascade, hybrid recall...); MANY keeps top_k=2, and rows
    # are compared on one top_k, so it is refused on that before anything is built
    result = runner.invoke(app, [*COMMANDS["bench"], str(tmp_path / "db"), "--pipeline", MANY])
    _one_error_line(result, "same top_k", "keeps 2")
    assert made == []


# -- adapters: arguments that contradict the spec, and the spec in the metadata --------------------------------
def test_adapters_refuse_a_reranker_or_a_contradicting_number_with_a_spec(made, db):
    pytest.importorskip("langchain_core")
    pytest.importorskip("llama_index.core")
    from twostage_integrations import langchain as lc
    from twostage_integrations import llama_index as li

    with pytest.raises(InvalidParameterError, match="reranker"):
        lc.TwoStageRetriever.from_collection("notes", path=db, reranker=FakeReranker(), pipeline=ONE)
    with pytest.raises(InvalidParameterError, match=r"^top_k=3 contradicts"):
        lc.TwoStageRetriever.from_collection("notes", path=db, top_k=3, preset="exact")
    with pytest.raises(InvalidParameterError, match="from_collection"):
        lc.TwoStageRetriever(pipeline=ONE)
    with pytest.raises(InvalidParameterError, match="model='org/other' contradicts"):
        lc.TwoStageCompressor(model="org/other", pipeline=ONE)
    with pytest.raises(InvalidParameterError, match="top_n=9 contradicts"):
        li.TwoStageRerank(top_n=9, pipeline=ONE)
    with pytest.raises(PipelineSpecError, match="not both"):
        li.TwoStageRerank(pipeline=ONE, preset="exact")
    with pytest.raises(InvalidParameterError, match="no rerank stage"):
        lc.TwoStageCompressor(pipeline="dense:5 > none > top_k=2")
    # agreeing values are no contradiction: a dumped compressor rebuilds
    compressor = lc.TwoStageCompressor(pipeline=ONE)
    dumped = compressor.model_dump()
    assert dumped == {"model": "org/ce", "top_n": 2, "pipeline": str(PipelineSpec.parse(ONE))}
    assert lc.TwoStageCompressor(**dumped).model_dump() == dumped


def test_adapters_metadata_says_which_spec_ran(made, db):
    pytest.importorskip("langchain_core")
    pytest.importorskip("llama_index.core")
    from langchain_core.documents import Document
    from llama_index.core.schema import MetadataMode, NodeWithScore, TextNode

    from twostage_integrations import langchain as lc
    from twostage_integrations import llama_index as li

    spec = str(PipelineSpec.parse(ONE))
    docs = lc.TwoStageRetriever.from_collection("notes", path=db, pipeline=ONE).invoke("aspirin stroke")
    assert len(docs) == 2 and {d.metadata["pipeline"] for d in docs} == {spec}
    texts = [Document(page_content=t, id=name) for name, t in NOTES.items()]
    compressed = lc.TwoStageCompressor(pipeline=ONE).compress_documents(texts, "aspirin stroke")
    assert len(compressed) == 2 and {d.metadata["pipeline"] for d in compressed} == {spec}
    assert all("pipeline" not in d.metadata for d in texts)  # inputs untouched
    nodes = [NodeWithScore(node=TextNode(text=t), score=0.5) for t in NOTES.values()]
    reranked = li.TwoStageRerank(preset="exact").postprocess_nodes(nodes, query_str="aspirin stroke")
    assert {n.node.metadata["pipeline"] for n in reranked} == {PRESETS["exact"]}
    assert "pipeline" not in reranked[0].node.get_content(metadata_mode=MetadataMode.LLM)
    pipe = TwoStagePipeline.from_spec(ONE, ChromaRecall("notes", path=db))
    retrieved = li.TwoStageRetriever(pipe).retrieve("aspirin stroke")
    assert len(retrieved) == 2 and {n.node.metadata["pipeline"] for n in retrieved} == {spec}
    # without a spec, no "pipeline" key
    plain = lc.TwoStageCompressor(FakeReranker()).compress_documents(texts, "aspirin stroke")
    assert all("pipeline" not in d.metadata for d in plain)


def test_adapters_without_a_reranker_get_the_default_presets_stages(db, monkeypatch):
    from twostage_integrations.rerank.cascade import Cascade
    from twostage_integrations.rerank.lazy import LazyReranker
    from twostage_integrations.spec import presets
    from twostage_integrations.spec.adapters import pipeline_for

    monkeypatch.delenv("TWOSTAGE_RERANK_BACKEND", raising=False)
    monkeypatch.setitem(presets.PRESETS, "test-default", "hybrid:20 > default:3@backend=onnx-int8 > default > top_k=3")
    monkeypatch.setattr(presets, "DEFAULT_PRESET", "test-default")
    pipe = pipeline_for(ChromaRecall("notes", path=db), top_k=4)
    assert isinstance(pipe.reranker, Cascade) and pipe.top_k == 4
    stages = [(type(r), r.loaded, r._kwargs, keep) for r, keep in pipe.reranker.stages]  # named, not loaded
    assert stages == [(LazyReranker, False, {"backend": "onnx-int8"}, 4), (LazyReranker, False, {}, None)]
    monkeypatch.setattr(presets, "DEFAULT_PRESET", "exact")  # one plain stage: a LazyReranker, as before presets
    assert isinstance(pipeline_for(ChromaRecall("notes", path=db)).reranker, LazyReranker)


def test_a_default_on_an_onnx_engine_falls_back_to_one_plain_stage_without_the_onnx_extra(monkeypatch):
    from twostage_integrations.rerank import onnx
    from twostage_integrations.spec import StageSpec, default_stages, presets

    monkeypatch.delenv("TWOSTAGE_RERANK_BACKEND", raising=False)
    monkeypatch.setenv("TWOSTAGE_RERANK_MODEL", "org/ce")  # a local cross-encoder's name: engine options apply
    monkeypatch.setattr(presets, "DEFAULT_PRESET", "fast")
    monkeypatch.setattr(onnx, "exact_engines", lambda: ["torch", "onnx"])
    assert [s.backend for s in default_stages()] == ["onnx-int8"]
    monkeypatch.setattr(onnx, "exact_engines", lambda: ["torch"])  # a plain install: no onnx exporter
    assert default_stages() == (StageSpec(None),)  # what auto can run, instead of an error at the first query


def test_adapters_holding_a_default_cascade_dump_and_rebuild_it(monkeypatch):
    from twostage_integrations import langchain as lc
    from twostage_integrations import llama_index as li
    from twostage_integrations.rerank.cascade import Cascade
    from twostage_integrations.rerank.lazy import LazyReranker
    from twostage_integrations.spec import presets

    monkeypatch.delenv("TWOSTAGE_RERANK_BACKEND", raising=False)
    monkeypatch.setitem(presets.PRESETS, "test-default", "hybrid:20 > default:3@backend=onnx-int8 > default > top_k=3")
    monkeypatch.setattr(presets, "DEFAULT_PRESET", "test-default")
    compressor = lc.TwoStageCompressor(top_n=4)
    dumped = compressor.model_dump()
    assert dumped == {"model": None, "top_n": 4}  # a cascade's name is not a model name
    assert isinstance(lc.TwoStageCompressor(**dumped)._reranker, Cascade)
    rerank = li.TwoStageRerank(top_n=4)
    assert rerank.model is None
    rebuilt = li.TwoStageRerank.from_dict(rerank.to_dict())
    assert isinstance(rebuilt._reranker, Cascade) and rebuilt.top_n == 4
    # one plain default stage is still named by its model, as before presets
    monkeypatch.setattr(presets, "DEFAULT_PRESET", "exact")
    plain = lc.TwoStageCompressor()
    assert isinstance(plain._reranker, LazyReranker) and plain.model == plain._reranker.name
    assert li.TwoStageRerank().model == plain.model
