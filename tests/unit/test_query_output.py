"""What `twostage query` prints: which file each hit came from (at 80 columns too), and an honest header when a
filter matches nothing. Runs the real CLI in-process with the FakeEmbedder (no weights)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from twostage_integrations.cli import app
from twostage_integrations.hit import Hit

runner = CliRunner()


def query(db: str, *args: str, columns: int = 80):
    return runner.invoke(
        app, ["query", "aspirin stroke", "-c", "notes", "--db", db, "--no-rerank", *args], env={"COLUMNS": str(columns)}
    )


def test_table_at_80_columns_names_each_hits_file(notes_db):
    result = query(notes_db)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    rows = [line for line in lines if "aspirin.md" in line or "statins.md" in line]
    assert len(rows) == 2 and "aspirin.md" in rows[0]  # one row each, the aspirin note first
    ids = [h["id"] for h in json.loads(query(notes_db, "--json").stdout)["hits"]]
    assert not any(i[:12] in result.stdout for i in ids)  # narrow: the source replaces the hash id
    assert "Aspirin lowers the risk of a" in result.stdout  # the snippet keeps a readable width


def test_wide_table_shows_source_and_id(notes_db):
    result = query(notes_db, columns=200)
    ids = [h["id"] for h in json.loads(query(notes_db, "--json").stdout)["hits"]]
    assert "notes/aspirin.md #0" in result.stdout and ids[0][:12] in result.stdout


def test_filter_that_matches_nothing_says_so_and_exits_0(notes_db):
    result = query(notes_db, "--filter", '{"filename": "nope.md"}')
    assert result.exit_code == 0  # like `vai query` / `gh search`: no hits is an answer (see query --help)
    assert '\'aspirin stroke\' — no passage matches --filter {"filename": "nope.md"}' in result.stdout
    assert "recalled" not in result.stdout and "reranked by" not in result.stdout
    assert "metadata keys filename, passage, source" in result.stderr  # the hint stays
    as_json = query(notes_db, "--json", "--filter", '{"filename": "nope.md"}')
    assert as_json.exit_code == 0 and json.loads(as_json.stdout)["hits"] == []


def test_exit_status_for_no_hits_is_documented():
    out = runner.invoke(app, ["query", "--help"], env={"COLUMNS": "200", "TERM": "dumb"}, color=False).output
    assert "exit status is still 0" in " ".join(out.split())


@pytest.mark.parametrize(
    "metadata, width, shown",
    [
        ({"source": "notes/aspirin.md", "filename": "aspirin.md", "passage": 2}, 40, "notes/aspirin.md #2"),
        ({"source": "data/rows.jsonl", "filename": "rows.jsonl", "line": 12}, 40, "data/rows.jsonl:12"),
        ({"source": "/very/long/path/to/some/notes/aspirin.md", "passage": 0}, 22, "…/notes/aspirin.md #0"),
        ({"filename": "aspirin.md"}, 22, "aspirin.md"),
        ({"title": "Aspirin and stroke"}, 40, "Aspirin and stroke"),
        ({"kind": "module"}, 40, None),
    ],
)
def test_hit_source(metadata, width, shown):
    from twostage_integrations.cli.render import hit_source

    label = hit_source(Hit(id="x", text="t", metadata=metadata), width)
    assert label == shown
    assert label is None or len(label) <= width
