"""The truncation hint of a real `twostage query`: once per process, naming an option that exists and acts."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
from time_limits import SUBPROCESS_TIMEOUT

from twostage_integrations.rerank.cross_encoder import TRUNCATION_HINT

CUT = "longer than max_length="


def run(env, *args):
    exe = shutil.which("twostage")
    assert exe, "console script `twostage` is not installed (pip install -e .)"
    proc = subprocess.run([exe, *args], env=env, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


@pytest.fixture(scope="module")
def collection(tmp_path_factory, rerank_model_path, scifact_subset):
    home = tmp_path_factory.mktemp("hint")
    env = {**os.environ, "TWOSTAGE_RERANK_MODEL": rerank_model_path, "TWOSTAGE_DB": str(home / "db")}
    _, texts, _, _, _ = scifact_subset
    # Abstracts of ~250-400 words: every pair is over the model's own limit, none over 512 tokens once cut
    # to 200 words each.
    long_texts = [" ".join(t.split()[:200]) for t in texts if len(t.split()) >= 200][:6]
    assert len(long_texts) == 6, "the SciFact subset should hold abstracts of 200+ words"
    for i, text in enumerate(long_texts):
        (home / f"abstract{i}.txt").write_text(text)
    run(env, "ingest", str(home), "-c", "hint")
    return env


def test_the_hint_shows_once_and_names_an_option_of_query(collection):
    out = run(collection, "query", "does aspirin prevent stroke?", "-c", "hint", "--limit", "6", "--top-k", "3")
    lines = [line for line in out.stderr.splitlines() if CUT in line]
    assert len(lines) == 1, out.stderr  # once per process
    assert TRUNCATION_HINT in lines[0]
    flag = re.search(r"--[a-z][a-z-]+", TRUNCATION_HINT).group(0)
    help_text = run({**collection, "COLUMNS": "200"}, "query", "--help").stdout
    assert flag in help_text


def test_the_named_option_raises_the_limit(collection):
    out = run(
        collection, "query", "does aspirin prevent stroke?", "-c", "hint", "--limit", "6", "--rerank-max-length", "512"
    )
    assert CUT not in out.stderr, out.stderr  # 200 words fit in 512 tokens: nothing is cut any more
