"""``query --num-candidates`` does what its help and docs/reliability.md say: it asks Chroma for
``max(limit, N)`` results and keeps the best ``limit``; it never sets the collection's ``ef_search``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.main import get_command

from twostage_integrations import ChromaRecall
from twostage_integrations.cli import app
from twostage_integrations.testing import FakeEmbedder

DOCS = Path(__file__).resolve().parents[2] / "docs"


def option_help(command: str, name: str) -> str:
    (param,) = [p for p in get_command(app).commands[command].params if p.name == name]
    return param.help or ""


def test_help_describes_the_depth_without_claiming_ef_search():
    text = option_help("query", "num_candidates")
    assert "ef_search" not in text
    assert "--limit" in text and "Chroma" in text  # fetch N (at least --limit) from Chroma, keep the best --limit


def test_reliability_doc_says_what_the_search_does():
    doc = " ".join((DOCS / "reliability.md").read_text().split())
    assert "asks Chroma for `max(limit, N)` results and keeps the best `limit`" in doc
    assert "the collection's stored configuration never changes" in doc


@pytest.fixture
def recall(tmp_path):
    r = ChromaRecall("depth", path=tmp_path / "db", embedding_model=FakeEmbedder(), progress=False)
    r.add_texts([f"passage {i} about aspirin and stroke number {i}" for i in range(30)])
    return r


@pytest.mark.parametrize(("limit", "num_candidates", "asked"), [(3, 10, 10), (5, 2, 5), (4, None, 4)])
def test_num_candidates_is_how_many_results_chroma_is_asked_for(recall, monkeypatch, limit, num_candidates, asked):
    collection = recall.collection
    stored = json.dumps(collection.configuration_json, sort_keys=True)
    query = type(collection).query
    seen: list[int] = []

    def spy(self, *args, **kwargs):
        seen.append(kwargs["n_results"])
        return query(self, *args, **kwargs)

    monkeypatch.setattr(type(collection), "query", spy)
    hits = recall.search("aspirin stroke", limit, num_candidates=num_candidates)
    assert seen == [asked]
    assert [h.recall_rank for h in hits] == list(range(1, limit + 1))  # the best `limit` of them are kept
    assert json.dumps(recall.collection.configuration_json, sort_keys=True) == stored  # ef_search untouched
