"""Every ``--help`` labels values as click does (``--limit INTEGER``, ``--db PATH``), never with Typer's
``<str>`` / ``<int>`` / ``<path>`` tags, and positional arguments by their name alone."""

from __future__ import annotations

import re

import pytest
from typer.main import get_group
from typer.testing import CliRunner

from twostage_integrations.cli import app

runner = CliRunner()
# Typer's type tags: <str>, <int>, <float>, <bool>, <path>, <list[str]>, <int range>... (help texts may say
# qrels/<split>.tsv, so only type names count).
TYPER_TAG = re.compile(r"<(?:str|int|float|bool|path|file|directory|uuid|datetime|list\[[^\]]*\])(?: range)?>", re.I)
SUBCOMMANDS = sorted(get_group(app).commands)


def help_text(*args: str) -> str:
    result = runner.invoke(app, [*args, "--help"], env={"COLUMNS": "200", "TERM": "dumb"}, color=False)
    assert result.exit_code == 0, result.output
    return result.output


def row(text: str, option: str) -> str:
    """The help row that starts with ``option``, box drawing and spacing collapsed."""
    lines = (" ".join(line.strip("│ ").split()) for line in text.splitlines())
    return next(line for line in lines if line.startswith(option + " ") or line.startswith("* " + option + " "))


def test_every_subcommand_is_checked():
    assert {"query", "ingest", "demo", "eval", "serve", "bench", "bench-serve", "finetune"} <= set(SUBCOMMANDS)


@pytest.mark.parametrize("command", [[], *[[c] for c in SUBCOMMANDS]], ids=lambda c: " ".join(c) or "twostage")
def test_help_has_no_typer_type_tags(command):
    out = help_text(*command)
    assert not TYPER_TAG.findall(out), TYPER_TAG.findall(out)


def test_values_are_labelled_like_click():
    query = help_text("query")
    assert row(query, "--limit -l").split()[2] == "INTEGER"
    assert row(query, "--db").split()[1] == "PATH"
    assert row(query, "--collection -c").split()[3] == "TEXT"  # after the required mark
    assert row(help_text("serve"), "--batch-wait-ms").split()[1] == "FLOAT"
    assert row(help_text("demo"), "--query -q").split()[2] == "TEXT"  # repeatable: one value each time


def test_flags_and_arguments_carry_no_label():
    query = help_text("query")
    assert row(query, "--no-rerank").split()[1] == "Skip"  # the help text follows the flag at once
    assert row(query, "* TEXT").split()[2] == "The"  # the argument's name, then its help
    assert row(help_text("ingest"), "* PATHS").split()[2] == ".txt/.md/.jsonl"
    assert row(help_text(), "--debug").split()[1] == "Show"
