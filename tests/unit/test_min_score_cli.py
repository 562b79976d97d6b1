"""`twostage query --min-score` and the calibrate/eval refusals, in-process with the FakeEmbedder (no weights)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from twostage_integrations.cli import app
from twostage_integrations.testing import FakeEmbedder

runner = CliRunner()
NOTES = {
    "aspirin.md": "Aspirin lowers the risk of a second stroke in adults who already had one.",
    "statins.md": "Statins lower LDL cholesterol and cut heart attacks in people at high risk.",
}


@pytest.fixture
def db(tmp_path, monkeypatch):
    import twostage_integrations.recall.chroma as chroma

    monkeypatch.setattr(chroma, "as_embedder", lambda model=None: FakeEmbedder())
    (tmp_path / "notes").mkdir()
    for name, text in NOTES.items():
        (tmp_path / "notes" / name).write_text(text)
    path = str(tmp_path / "db")
    assert runner.invoke(app, ["ingest", str(tmp_path / "notes"), "-c", "notes", "--db", path]).exit_code == 0
    return path


def query(db: str, *args: str):
    # dense recall: cosine scores have a known range (-1..1), so an out-of-range --min-score can be refused
    return runner.invoke(
        app, ["query", "aspirin stroke", "-c", "notes", "--db", db, "--recall", "dense", "--no-rerank", *args]
    )


def test_query_min_score_fewer_none_and_refused(db):
    hits = json.loads(query(db, "--json").stdout)["hits"]
    assert len(hits) == 2 and hits[0]["score"] > hits[1]["score"]
    middle = (hits[0]["score"] + hits[1]["score"]) / 2
    fewer = json.loads(query(db, "--json", "--min-score", f"{middle}").stdout)
    assert [h["id"] for h in fewer["hits"]] == [hits[0]["id"]] and fewer["min_score"] == pytest.approx(middle)
    none = query(db, "--json", "--min-score", "1")
    assert none.exit_code == 0 and json.loads(none.stdout)["hits"] == []
    table = query(db, "--min-score", "1")
    assert table.exit_code == 0 and "nothing relevant" in table.stdout
    bad = query(db, "--min-score", "2")
    assert bad.exit_code == 2 and "outside the range of cosine" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_calibrate_refuses_a_split_without_qrels_before_any_model(tmp_path):
    (tmp_path / "corpus.jsonl").write_text('{"_id": "1", "text": "a"}\n')
    (tmp_path / "queries.jsonl").write_text('{"_id": "q", "text": "a"}\n')
    result = runner.invoke(app, ["calibrate", str(tmp_path), "--rerank-model", str(tmp_path / "no-model")])
    assert result.exit_code == 2
    assert "qrels/train.tsv not found" in result.stderr and len(result.stderr.strip().splitlines()) == 1
