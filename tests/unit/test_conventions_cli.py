"""Rough edges of the CLI and ingest a new user hit, checked without models: help text, the --verbose switch,
non-text files, the metadata people filter on, the hint when a filtered query finds nothing."""

from __future__ import annotations

import json
import logging
import os
import sys

import pytest
from typer.testing import CliRunner

from twostage_integrations.cli import app
from twostage_integrations.ingest import read_documents, read_passages

runner = CliRunner()
COMMANDS = ["query", "ingest", "demo", "eval", "serve", "bench"]


def help_text(*args: str) -> str:
    result = runner.invoke(app, [*args, "--help"], env={"COLUMNS": "100", "TERM": "dumb"}, color=False)
    assert result.exit_code == 0, result.output
    return result.output


def flat(text: str) -> str:
    """Help text without the box drawing and line wrapping."""
    return " ".join(" ".join(line.strip("│╭╰─╮╯ ") for line in text.splitlines()).split())


@pytest.mark.parametrize("command", [[], *[[c] for c in COMMANDS]])
def test_help_has_no_bool_labels_or_braced_arguments(command):
    out = help_text(*command)
    assert "<bool>" not in out
    assert not any("{" in line for line in out.splitlines() if "Usage:" in line)


def test_usage_names_arguments_like_click():
    assert "Usage: twostage query [OPTIONS] TEXT" in help_text("query")
    assert "Usage: twostage ingest [OPTIONS] PATHS..." in help_text("ingest")


def test_command_descriptions_are_not_cut_mid_sentence():
    lines = [line.strip("│ ").rstrip() for line in help_text().splitlines()]
    demo = next(i for i, line in enumerate(lines) if line.startswith("demo "))
    # a docstring line break used to end the first line at "for a few queries," and start a new one
    assert not lines[demo].endswith(",") and not lines[demo + 1].startswith("recall order")


def test_filter_examples_use_keys_ingest_stores(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "aspirin.md").write_text("Aspirin lowers the risk of a second stroke.")
    (meta,) = [p.metadata for p in read_passages([tmp_path / "notes"])]
    out = flat(help_text("query"))
    assert '"filename": "aspirin.md"' in out and meta["filename"] == "aspirin.md"
    assert meta["source"] == str(tmp_path / "notes" / "aspirin.md")


def test_binary_and_non_utf8_files_are_skipped_with_a_reason(tmp_path):
    (tmp_path / "real.md").write_text("Statins lower LDL cholesterol.")
    (tmp_path / "ls.txt").write_bytes(b"\x7fELF\x02\x01\x01\x00\x00\x00" + bytes(range(256)) * 4)
    (tmp_path / "latin.txt").write_bytes("café au lait".encode("latin-1"))
    (tmp_path / "data.jsonl").write_bytes(b'{"text": "ok"}\n\x00\x00')
    read = read_documents([tmp_path])
    assert [p.metadata["filename"] for p in read.passages] == ["real.md"]
    reasons = {s.path.name: s.reason for s in read.skipped}
    assert set(reasons) == {"ls.txt", "latin.txt", "data.jsonl"}
    assert "NUL" in reasons["ls.txt"] and "UTF-8" in reasons["latin.txt"] and "iconv" in reasons["latin.txt"]


def test_jsonl_lines_get_source_and_filename(tmp_path):
    f = tmp_path / "rows.jsonl"
    f.write_text(json.dumps({"text": "line with a \u2028 separator", "_id": "r1"}) + "\n")
    (p,) = read_passages([f])
    assert p.id == "r1" and p.text == "line with a \u2028 separator"
    assert (p.metadata["source"], p.metadata["filename"], p.metadata["line"]) == (str(f), "rows.jsonl", 1)


def test_ingest_of_only_binary_files_is_one_error_line(tmp_path):
    (tmp_path / "x.txt").write_bytes(b"\x00\x01\x02")
    result = runner.invoke(app, ["ingest", str(tmp_path), "-c", "unit-bin", "--db", str(tmp_path / "db")])
    assert result.exit_code == 2
    assert "warning: skipped" in result.output and "x.txt" in result.output
    assert "error: no text to ingest" in result.output and "Traceback" not in result.output


def test_empty_filtered_result_explains_the_filter(fake_recall):
    from twostage_integrations.cli.query import _no_results_hint

    fake_recall.add_texts(["Aspirin and stroke."], metadatas=[{"source": "notes/aspirin.md", "filename": "aspirin.md"}])
    hint = _no_results_hint(fake_recall, "unit", {"source": "aspirin.md"})
    assert '--filter {"source": "aspirin.md"}' in hint
    assert "filename, source" in hint and '--filter \'{"filename": "aspirin.md"}\'' in hint


def test_quiet_by_default_verbose_on_request(monkeypatch):
    import importlib

    app_module = importlib.import_module("twostage_integrations.cli.app")

    for var in ("HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(logging.getLogger("sentence_transformers"), "level", logging.NOTSET)
    app_module.main(verbose=False, debug=False)
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1" and os.environ["TRANSFORMERS_VERBOSITY"] == "error"
    assert logging.getLogger("sentence_transformers").level == logging.WARNING
    if "transformers" in sys.modules:
        assert not sys.modules["transformers"].utils.logging.is_progress_bar_enabled()
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS")
    app_module.main(verbose=True, debug=False)
    assert "HF_HUB_DISABLE_PROGRESS_BARS" not in os.environ
    assert "--verbose" in help_text()
