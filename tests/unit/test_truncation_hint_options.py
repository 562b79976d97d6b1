"""The truncation warning names an option every reranking command has, and that option reaches the stage."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from twostage_integrations.cli import app
from twostage_integrations.cli.app import pipeline_spec
from twostage_integrations.rerank.cross_encoder import TRUNCATION_HINT


@pytest.mark.parametrize("command", ["query", "demo", "eval", "serve", "bench"])
def test_the_hint_names_an_option_of_every_reranking_command(command):
    flag = re.search(r"--[a-z][a-z-]+", TRUNCATION_HINT).group(0)
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and flag in result.output


def test_rerank_max_length_sets_every_stage_that_names_none():
    spec = pipeline_spec(None, None, rerank_model="ce", rerank_max_length=256, stages=None)
    assert [s.max_length for s in spec.stages] == [256]
    cascade = pipeline_spec(None, None, rerank_max_length=256, stages=["ce:12@max_length=128", "ce"])
    assert [s.max_length for s in cascade.stages] == [128, 256]  # a stage's own limit wins
