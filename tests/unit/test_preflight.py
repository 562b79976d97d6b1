"""Every long command checks what it will need before its long part: a missing piece is one ``error:`` line and
exit 2 before any training, indexing or embedding (the long functions are replaced by ones that fail the test
if called), and a run that fails after its long part keeps what it finished."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from twostage_integrations.cli import app
from twostage_integrations.errors import InvalidDocumentError
from twostage_integrations.finetune import train as train_module
from twostage_integrations.finetune.train import FinetuneResult, finetune

runner = CliRunner()


def _never(what: str) -> Any:
    def called(*args: Any, **kwargs: Any) -> Any:
        pytest.fail(f"{what} ran although a needed file was missing")

    return called


def _beir(folder: Path, *, queries: bool = True, splits: tuple[str, ...] = ("train", "test")) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "title": "T", "text": "Aspirin."}) + "\n")
    if queries:
        (folder / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "aspirin?"}) + "\n")
    if splits:
        (folder / "qrels").mkdir(exist_ok=True)
    for split in splits:
        (folder / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    return folder


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


# -- finetune -----------------------------------------------------------------------------------------------
def _fixed_plan(config: Any, dataset: Path) -> tuple[bool, list, dict[str, Any]]:
    """_plan without a base model to read (it only reads the model's config.json)."""
    return False, [], {"dataset": str(dataset), "eval_split": config.eval_split}


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Training fails the test if reached."""
    monkeypatch.setattr(train_module, "_require_training_deps", lambda: None)
    monkeypatch.setattr(train_module, "_plan", _fixed_plan)
    monkeypatch.setattr(train_module, "_run_rounds", _never("training"))


@pytest.mark.parametrize(
    ("layout", "args", "missing"),
    [
        (dict(splits=("train",)), [], "test.tsv"),  # labelled run, default --eval-split test absent
        (dict(splits=("test",)), [], "train.tsv"),  # labelled run, its training split absent
        (dict(queries=False), [], "queries.jsonl"),
        (dict(splits=("train",)), ["--eval-split", "dev"], "dev.tsv"),
    ],
)
def test_finetune_refuses_a_missing_split_before_training(tmp_path, no_training, layout, args, missing):
    data = _beir(tmp_path / "data", **layout)
    cmd = ["finetune", str(data), "--base", "models/ce", "--out", str(tmp_path / "out"), *args]
    result = runner.invoke(app, cmd)
    assert result.exit_code == 2, result.output
    (line,) = _error_lines(result.output)
    assert missing in line and "available splits" in line or "queries.jsonl" in line


def test_label_free_without_a_corpus_is_refused_before_training(tmp_path, no_training):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidDocumentError, match="corpus.jsonl not found"):
        finetune(tmp_path / "empty", base="models/ce", out=tmp_path / "out", pairs="title-body")


def _fake_rounds(events: list[str]) -> Any:
    def run_rounds(dataset_dir: Path, settings: dict, cuts: list, run: Any) -> list[FinetuneResult]:
        events.append("trained")
        out = Path(run.config.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "model.safetensors").write_text("weights")  # what _train_round saves
        return [FinetuneResult(out_dir=out, settings=settings, model_info={}, n_queries=1, n_pairs=2, n_positive=1)]

    return run_rounds


@pytest.fixture
def fake_training(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Training replaced by a fake that records when it ran; planning by a fixed plan."""
    events: list[str] = []
    monkeypatch.setattr(train_module, "_require_training_deps", lambda: None)
    monkeypatch.setattr(train_module, "_plan", _fixed_plan)
    monkeypatch.setattr(train_module, "_run_rounds", _fake_rounds(events))
    return events


def test_label_free_on_a_corpus_only_folder_skips_the_evaluation_and_says_so_up_front(
    tmp_path, fake_training, monkeypatch
):
    """The reported bug: the default --eval-split test was read only after 34 minutes of training."""
    data = _beir(tmp_path / "corpus-only", queries=False, splits=())
    monkeypatch.setattr(train_module, "_evaluate", _never("the before/after evaluation"))
    warned: list[str] = []
    real_warning = train_module.logger.warning

    def record(msg: str, *args: Any) -> None:
        warned.append(msg % args)
        fake_training.append("warned")
        real_warning(msg, *args)

    monkeypatch.setattr(train_module.logger, "warning", record)
    out = tmp_path / "out"
    result = runner.invoke(app, ["finetune", str(data), "--pairs", "title-body", "--base", "m", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert fake_training == ["warned", "trained"]  # said before training, once
    (note,) = warned
    assert "queries.jsonl not found: skipping the before/after evaluation" in note
    assert "warning: " + note in result.output
    assert json.loads((out / "finetune.json").read_text())["settings"]["eval_split"] is None
    assert f"twostage eval {data}" in result.output


def test_a_failing_evaluation_after_training_keeps_the_model_and_finetune_json(tmp_path, fake_training, monkeypatch):
    data = _beir(tmp_path / "data")

    def failing_evaluate(*args: Any, **kwargs: Any) -> None:
        fake_training.append("evaluated")
        raise RuntimeError("evaluation broke")

    monkeypatch.setattr(train_module, "_evaluate", failing_evaluate)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="evaluation broke"):
        finetune(data, base="m", out=out)
    assert fake_training == ["trained", "evaluated"]
    assert (out / "model.safetensors").is_file()
    saved = json.loads((out / "finetune.json").read_text())
    assert saved["n_pairs"] == 2 and saved["metrics"] == {}


# -- eval ---------------------------------------------------------------------------------------------------
@pytest.fixture
def no_indexing(monkeypatch: pytest.MonkeyPatch) -> None:
    from twostage_integrations.bench import run as bench_run
    from twostage_integrations.evaluation import runner as eval_runner

    monkeypatch.setattr(eval_runner, "index_corpus", _never("indexing"))
    monkeypatch.setattr(bench_run, "build_collection", _never("indexing"))


@pytest.mark.parametrize(
    ("layout", "args", "expected"),
    [
        (dict(splits=("train",)), [], "test.tsv not found"),
        (dict(), ["--split", "dev"], "dev.tsv not found"),
        (dict(queries=False), [], "queries.jsonl not found"),
        (dict(), ["--json", "{tmp}/no-such-folder/out.json"], "no-such-folder does not exist"),
        (dict(), ["--plot", "{tmp}"], "is a folder"),
        (dict(), ["--embedding-model", "./no/such/embedder"], "embedding model path"),
        (dict(), ["--rerank-model", "./no/such/ce"], "rerank model path"),
    ],
)
def test_eval_refuses_a_missing_piece_before_indexing(tmp_path, no_indexing, layout, args, expected):
    data = _beir(tmp_path / "data", **layout)
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = runner.invoke(app, ["eval", str(data), "--recall", "bm25", "--db", str(tmp_path / "db"), *args])
    assert result.exit_code == 2, result.output
    (line,) = _error_lines(result.output)
    assert expected in line


# -- bench --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("layout", "args", "expected"),
    [
        (dict(splits=("train",)), [], "test.tsv not found"),
        (dict(), ["--json", "{tmp}/no-such-folder/b.json"], "no-such-folder does not exist"),
        (dict(), ["--embedding-model", "./no/such/embedder"], "embedding model path"),
        (dict(), ["--rerank-model", "./no/such/ce"], "rerank model path"),
    ],
)
def test_bench_refuses_a_missing_piece_before_indexing(tmp_path, no_indexing, layout, args, expected, monkeypatch):
    from twostage_integrations.bench import run as bench_run

    if "--rerank-model" not in args:  # else the real loader runs: it checks the path before any weights
        monkeypatch.setattr(bench_run, "_load_rerankers", _never("loading the rerankers"))
    data = _beir(tmp_path / "data", **layout)
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = runner.invoke(app, ["bench", str(data), "--systems", "twostage", *args])
    assert result.exit_code == 2, result.output
    (line,) = _error_lines(result.output)
    assert expected in line


# -- ingest -------------------------------------------------------------------------------------------------
def test_ingest_refuses_a_missing_path_before_embedding(tmp_path, monkeypatch):
    from twostage_integrations.cli import ingest as ingest_cli

    monkeypatch.setattr(ingest_cli, "make_recall", _never("opening the collection and the embedder"))
    (tmp_path / "a.txt").write_text("Aspirin lowers stroke risk.")
    args = ["ingest", str(tmp_path / "a.txt"), str(tmp_path / "missing.md"), "-c", "docs", "--db", str(tmp_path)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    (line,) = _error_lines(result.output)
    assert "missing.md: no such file or folder" in line
