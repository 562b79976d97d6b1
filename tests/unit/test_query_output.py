"""What `twostage query` prints: which file each hit came from (at 80 columns too), and an honest header when a
filter matches nothing. Runs the real CLI in-process with the FakeEmbedder (no weights)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from twostage_integrations.cli import app
from twostage_integrations.hit import Hit
from twostage_integrations.testing import FakeEmbedder

runner = CliRunner()
NOTES = {
    "aspirin.md": "Aspirin lowers the risk of a second stroke in adults who already had one.",
    "statins.md": "Statins lower LDL cholesterol and cut heart attacks in people at high risk.",
}


@pytest.fixture
def db(tmp_path, monkeypatch):
    """Both notes ingested into collection `notes` of a fresh embedded Chroma, embedded with the FakeEmbedder."""
    import twostage_integrations.recall.chroma as chroma

    # the CLI names embedders by model id; every ChromaRecall it builds gets the fake one instead
    monkeypatch.setattr(chroma, "as_embedder", lambda model=None: FakeEmbedder())
    (tmp_path / "notes").mkdir()
    for name, text in NOTES.items():
        (tmp_path / "notes" / name).write_text(text)
    path = str(tmp_path / "db")
    result = runner.invoke(app, ["ingest", str(tmp_path / "notes"), "-c", "notes", "--db", path])
    assert result.exit_code == 0, result.output
    return path


def query(db: str, *args: str, columns: int = 80):
    return runner.invoke(
        app, ["query", "aspirin stroke", "-c", "notes", "--db", db, "--no-rerank", *args], env={"COLUMNS": str(columns)}
    )


def test_table_at_80_columns_names_each_hits_file(db):
    result = query(db)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    rows = [line for line in lines if "aspirin.md" in line or "statins.md" in line]
    assert len(rows) == 2 and "aspirin.md" in rows[0]  # one row each, the aspirin note first
    ids = [h["id"] for h in json.loads(query(db, "--json").stdout)["hits"]]
    assert not any(i[:12] in result.stdout for i in ids)  # narrow: the source replaces the hash id
    assert "Aspirin lowers the risk of a" in result.stdout  # the snippet keeps a readable width


def test_wide_table_shows_source_and_id(db):
    result = query(db, columns=200)
    ids = [h["id"] for h in json.loads(query(db, "--json").stdout)["hits"]]
    assert "notes/aspirin.md #0" in result.stdout and ids[0][:12] in result.stdout


def test_filter_that_matches_nothing_says_so_and_exits_0(db):
    result = query(db, "--filter", '{"filename": "nope.md"}')
    assert result.exit_code == 0  # like `vai query` / `gh search`: no hits is an answer (see query --help)
    assert '\'aspirin stroke\' — no passage matches --filter {"filename": "nope.md"}' in result.stdout
    assert "recalled" not in result.stdout and "reranked by" not in result.stdout
    assert "metadata keys filename, passage, source" in result.stderr  # the hint stays
    as_json = query(db, "--json", "--filter", '{"filename": "nope.md"}')
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
