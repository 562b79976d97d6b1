"""Errors name the options the user typed (``--top-k``, ``--limit``), not the Python parameters behind them
(``top_k``, ``limit``), in every command that has them. No weights: each case fails before a model loads."""

from __future__ import annotations

import re
from typing import Annotated

import pytest
import typer
from typer.testing import CliRunner

from twostage_integrations import ChromaRecall
from twostage_integrations.cli import app
from twostage_integrations.cli.app import friendly_errors
from twostage_integrations.errors import InvalidParameterError
from twostage_integrations.testing import FakeEmbedder
from twostage_integrations.validation import check_positive_int

runner = CliRunner()


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    """An embedded Chroma with one small collection, ``flags``."""
    path = tmp_path_factory.mktemp("flag-names") / "db"
    ChromaRecall("flags", path=path, embedding_model=FakeEmbedder(), progress=False).add_texts(["aspirin", "statins"])
    return path


@pytest.fixture(scope="module")
def beir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("flag-names-beir")
    (folder / "qrels").mkdir()
    (folder / "corpus.jsonl").write_text('{"_id": "d1", "title": "", "text": "aspirin"}\n')
    (folder / "queries.jsonl").write_text('{"_id": "q1", "text": "aspirin?"}\n')
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    return folder


def error_line(args: list[str]) -> str:
    result = runner.invoke(app, args, env={"TWOSTAGE_DEBUG": ""})
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1, result.output
    return errors[0]


def command(name: str, db, beir) -> list[str]:
    return {
        "query": ["query", "aspirin", "-c", "flags", "--db", str(db), "--no-rerank"],
        "eval": ["eval", str(beir), "--no-rerank", "--db", str(db.parent / "eval-db")],
        "bench": ["bench"],
        "demo": ["demo", "--db", str(db.parent / "demo-db")],
    }[name]


@pytest.mark.parametrize("name", ["query", "eval", "bench", "demo"])
@pytest.mark.parametrize(
    ("option", "flag", "parameter"),
    [("--top-k", "--top-k", "top_k"), ("-k", "--top-k", "top_k"), ("--limit", "--limit", "limit")],
)
def test_errors_name_the_option_not_the_parameter(name, option, flag, parameter, db, beir):
    line = error_line([*command(name, db, beir), option, "0"])
    assert f"{flag} must be >= 1, got 0" in line, line
    assert not re.search(rf"(?<![\w-]){parameter}\b", line), line  # the bare Python name is gone


def test_eval_max_queries_too(beir, db):
    line = error_line([*command("eval", db, beir), "--max-queries", "0"])
    assert "--max-queries must be >= 1" in line and "max_queries" not in line


def test_demo_checks_the_numbers_before_loading_or_indexing(db, tmp_path):
    # A model folder that exists, so only the numbers can stop the demo before it indexes the corpus.
    env = {"TWOSTAGE_DEBUG": "", "TWOSTAGE_RERANK_MODEL": str(tmp_path)}
    args = ["demo", "--db", str(tmp_path / "demo-db"), "--limit", "3", "--top-k", "5"]
    result = runner.invoke(app, args, env=env)
    assert result.exit_code == 2 and "larger than limit (3)" in result.output, result.output
    assert not (tmp_path / "demo-db").exists()  # nothing loaded or written first


def raising(exc: Exception) -> typer.Typer:
    """A one-command app with --max-docs/-n and --model whose body raises ``exc``."""
    toy = typer.Typer()

    @toy.command()
    @friendly_errors
    def run(
        max_docs: Annotated[int, typer.Option("--max-docs", "-n")] = 1,
        model: Annotated[str, typer.Option("--model")] = "m",
    ) -> None:
        raise exc

    return toy


def invoke(exc: Exception) -> str:
    result = runner.invoke(raising(exc), ["-n", "0"], env={"TWOSTAGE_DEBUG": ""})
    assert result.exit_code == (2 if isinstance(exc, InvalidParameterError) else 1), result.output
    return result.output.strip()


def positive(value: int, name: str) -> Exception:
    with pytest.raises(InvalidParameterError) as info:
        check_positive_int(value, name)
    return info.value


def test_a_checked_parameter_is_named_by_the_commands_option():
    assert invoke(positive(0, "max_docs")) == "error: --max-docs must be >= 1, got 0"
    assert invoke(positive(0, "model")) == "error: --model must be >= 1, got 0"


@pytest.mark.parametrize(
    "exc",
    [
        positive(0, "keep of cascade stage 1"),  # not an option of this command
        InvalidParameterError("max_docs must be >= 1, got 0"),  # no parameter recorded: left as written
        InvalidParameterError("max_docs_total must be >= 1", parameter="max_docs"),  # not the whole name
    ],
)
def test_other_messages_are_left_as_written(exc):
    assert invoke(exc) == f"error: {exc}"


def test_only_our_typed_errors_are_rewritten():
    output = invoke(ValueError("max_docs must be >= 1"))
    assert "max_docs must" in output and "--max-docs" not in output  # a bug is reported as it was raised
