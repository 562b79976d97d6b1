"""The zero-setup demo: a bundled corpus, a handful of queries, recall order next to reranked order."""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

DEMO_COLLECTION = "twostage-demo"
DEMO_QUERIES = [
    "how do I run a shell command and capture what it prints?",
    "turn a Python object into a JSON string",
    "parse options and arguments given on the command line",
    "compute a secure hash of some bytes",
    "wait for several coroutines to finish at the same time",
    "make a temporary directory that is removed afterwards",
]


def sample_corpus_path() -> Path:
    """The bundled corpus: 458 passages of Python standard-library documentation (PSF License)."""
    return Path(str(files("twostage_integrations") / "data" / "sample_corpus.jsonl"))


def load_sample_corpus() -> list[dict]:
    with open(sample_corpus_path(), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
