"""`twostage query --min-score` and the calibrate/eval refusals, in-process with the FakeEmbedder (no weights)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from twostage_integrations.cli import app

runner = CliRunner()


def query(db: str, *args: str):
    # dense recall: cosine scores have a known range (-1..1), so an out-of-range --min-score can be refused
    return runner.invoke(
        app, ["query", "aspirin stroke", "-c", "notes", "--db", db, "--recall", "dense", "--no-rerank", *args]
    )


def test_query_min_score_fewer_none_and_refused(notes_db):
    hits = json.loads(query(notes_db, "--json").stdout)["hits"]
    assert len(hits) == 2 and hits[0]["score"] > hits[1]["score"]
    middle = (hits[0]["score"] + hits[1]["score"]) / 2
    fewer = json.loads(query(notes_db, "--json", "--min-score", f"{middle}").stdout)
    assert [h["id"] for h in fewer["hits"]] == [hits[0]["id"]] and fewer["min_score"] == pytest.approx(middle)
    none = query(notes_db, "--json", "--min-score", "1")
    assert none.exit_code == 0 and json.loads(none.stdout)["hits"] == []
    table = query(notes_db, "--min-score", "1")
    assert table.exit_code == 0 and "nothing relevant" in table.stdout
    bad = query(notes_db, "--min-score", "2")
    assert bad.exit_code == 2 and "outside the range of cosine" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_calibrate_refuses_a_split_without_qrels_before_any_model(tmp_path):
    (tmp_path / "corpus.jsonl").write_text('{"_id": "1", "text": "a"}\n')
    (tmp_path / "queries.jsonl").write_text('{"_id": "q", "text": "a"}\n')
    result = runner.invoke(app, ["calibrate", str(tmp_path), "--rerank-model", str(tmp_path / "no-model")])
    assert result.exit_code == 2
    assert "qrels/train.tsv not found" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_calibrate_refuses_unknown_long_docs_before_any_model(tmp_path):
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text('{"_id": "1", "text": "a"}\n')
    (tmp_path / "queries.jsonl").write_text('{"_id": "q", "text": "a"}\n')
    (tmp_path / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq\t1\t1\n")
    args = ["calibrate", str(tmp_path), "--long-docs", "all", "--rerank-model", str(tmp_path / "no-model")]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "long_docs must be one of first, max, top2mean" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
