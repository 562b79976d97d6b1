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


def raising(message: str, exc_type: type[Exception] = InvalidParameterError) -> typer.Typer:
    """A one-command app with --max-docs and --model whose body raises ``exc_type(message)``."""
    toy = typer.Typer()

    @toy.command()
    @friendly_errors
    def run(
        max_docs: Annotated[int, typer.Option("--max-docs", "-n")] = 1,
        model: Annotated[str, typer.Option("--model")] = "m",
    ) -> None:
        raise exc_type(message)

    return toy


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("max_docs must be >= 1, got 0", "error: --max-docs must be >= 1, got 0"),
        # prose, or a name that is not the subject of "must", is left alone
        (
            "rerank model path '/x' does not exist; pass another model",
            "error: rerank model path '/x' does not exist; pass another model",
        ),
        ("max_docs (3) is larger than max_documents (2)", "error: max_docs (3) is larger than max_documents (2)"),
        # a longer name that merely contains a parameter name is not rewritten
        ("max_docs_total must be >= 1", "error: max_docs_total must be >= 1"),
    ],
)
def test_the_mapping_comes_from_the_command_options(message, expected):
    result = runner.invoke(raising(message), [], env={"TWOSTAGE_DEBUG": ""})
    assert result.exit_code == 2 and result.output.strip() == expected


def test_only_our_typed_errors_are_rewritten():
    result = runner.invoke(raising("max_docs must be >= 1", ValueError), [], env={"TWOSTAGE_DEBUG": ""})
    assert result.exit_code == 1 and "max_docs must" in result.output  # a bug is reported as it was raised
