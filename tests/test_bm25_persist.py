"""The BM25 snapshot saved at ingest: a cold process's hybrid query reads no corpus from Chroma, and a snapshot
made stale by another writer is still noticed and rebuilt (no weights: Chroma embeds with the FakeEmbedder).

Reads are counted the way a reader of the corpus would be seen: every ``Collection.get`` in the cold process is
recorded with how many documents (passage texts) it returned.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from twostage_integrations import BM25Recall, ChromaRecall, HybridRecall
from twostage_integrations.cli import app
from twostage_integrations.errors import InvalidParameterError
from twostage_integrations.recall.bm25 import CORPUS_FILE, FINGERPRINT_FILE
from twostage_integrations.recall.factory import persist_bm25
from twostage_integrations.testing import FakeEmbedder

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()
NOTES = {
    "aspirin.md": "Aspirin lowers the risk of a second stroke in adults who already had one.",
    "statins.md": "Statins lower LDL cholesterol and cut heart attacks in people at high risk.",
    "sleep.md": "Adults who sleep less than six hours a night have more strokes.",
    "coffee.md": "Coffee does not raise the risk of stroke in most adults.",
}

# A cold process: counts Collection.get reads, embeds with the FakeEmbedder, runs `twostage query` (or a write).
PRELUDE = """
import json, sys
sys.path[:0] = [{repo!r}]
from chromadb.api.models.Collection import Collection
import twostage_integrations.recall.chroma as chroma_module
from twostage_integrations.testing import FakeEmbedder
chroma_module.as_embedder = lambda model=None: FakeEmbedder()
reads = []
real_get = Collection.get
def counting_get(self, *args, **kwargs):
    result = real_get(self, *args, **kwargs)
    reads.append(len(result.get("documents") or []))
    return result
Collection.get = counting_get
"""


def run_cold(db: Path, body: str) -> dict:
    """Run ``body`` after :data:`PRELUDE` in a new Python process; its last stdout line is a JSON object."""
    script = PRELUDE.format(repo=str(REPO)) + textwrap.dedent(body)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def cold_query(db: Path, text: str) -> dict:
    """``twostage query TEXT -c notes --db DB --no-rerank --json`` in a new process: its JSON and the reads."""
    return run_cold(
        db,
        f"""
        import contextlib, io
        from twostage_integrations.cli import app
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            try:
                app(["query", {text!r}, "-c", "notes", "--db", {str(db)!r}, "--no-rerank", "--json"])
            except SystemExit as exit:
                assert not exit.code, exit.code
        payload = json.loads(out.getvalue())
        print(json.dumps({{"payload": payload, "documents_read": sum(reads), "gets": len(reads)}}))
        """,
    )


@pytest.fixture
def notes(tmp_path, monkeypatch) -> Path:
    """The notes as files, and this process's Chroma embedding with the FakeEmbedder."""
    import twostage_integrations.recall.chroma as chroma

    monkeypatch.setattr(chroma, "as_embedder", lambda model=None: FakeEmbedder())
    folder = tmp_path / "notes"
    folder.mkdir()
    for name, text in NOTES.items():
        (folder / name).write_text(text)
    return folder


def ingest(notes: Path, db: Path, *extra: str) -> None:
    result = runner.invoke(app, ["ingest", str(notes), "-c", "notes", "--db", str(db), *extra])
    assert result.exit_code == 0, result.output


def saved_stamp(db: Path) -> dict:
    (folder,) = [p for p in (db / "bm25" / "notes").iterdir() if p.is_dir() and not p.name.startswith(".tmp-")]
    assert (folder / CORPUS_FILE).is_file()
    return json.loads((folder / FINGERPRINT_FILE).read_text())


def texts_of(result: dict) -> list[str]:
    return [hit["text"] for hit in result["payload"]["hits"]]


def test_cold_hybrid_query_after_ingest_reads_no_corpus(notes, tmp_path):
    db = tmp_path / "db"
    ingest(notes, db)
    chroma = ChromaRecall("notes", path=db, embedding_model=FakeEmbedder())
    assert saved_stamp(db)["version"] == list(chroma.version())  # saved at the version ingest left

    cold = cold_query(db, "aspirin stroke")
    assert cold["payload"]["pipeline"].startswith("hybrid:")  # the default, no --recall given
    assert NOTES["aspirin.md"] in texts_of(cold)
    assert cold["documents_read"] == 0, cold

    # The same query without the saved snapshot reads every passage: the counter sees corpus reads.
    shutil.rmtree(db / "bm25")
    rebuilt = cold_query(db, "aspirin stroke")
    assert rebuilt["documents_read"] >= len(NOTES), rebuilt
    assert texts_of(rebuilt) == texts_of(cold)


def test_no_bm25_skips_the_snapshot(notes, tmp_path):
    db = tmp_path / "db"
    ingest(notes, db, "--no-bm25")
    assert not (db / "bm25").exists()
    assert "--no-bm25" in runner.invoke(app, ["ingest", "--help"]).output


def test_stale_snapshot_from_another_writer_is_rebuilt(notes, tmp_path):
    db = tmp_path / "db"
    ingest(notes, db)
    aspirin_id = ChromaRecall("notes", path=db, embedding_model=FakeEmbedder()).search("aspirin", 1)[0].id
    # Another process edits a passage in place (same id, same count) through ChromaRecall: the stamp moves.
    run_cold(
        db,
        f"""
        from twostage_integrations import ChromaRecall
        chroma = ChromaRecall("notes", path={str(db)!r})
        chroma.add_texts(["Zebras outrun lions on open grassland."], ids=[{aspirin_id!r}])
        print(json.dumps({{"count": chroma.count()}}))
        """,
    )
    stale = cold_query(db, "zebras grassland")
    assert stale["documents_read"] >= len(NOTES), stale  # the saved snapshot was not trusted
    assert "Zebras outrun lions on open grassland." in texts_of(stale)
    assert NOTES["aspirin.md"] not in texts_of(cold_query(db, "aspirin second stroke"))
    # The rebuild was saved at the new version: the next cold process reads nothing again.
    again = cold_query(db, "zebras grassland")
    assert again["documents_read"] == 0 and texts_of(again) == texts_of(stale)

    # A raw Chroma write (no stamp, but the count moves) is noticed too.
    chroma = ChromaRecall("notes", path=db, embedding_model=FakeEmbedder())
    chroma.collection.add(ids=["raw"], documents=["Penguins swim fast"], embeddings=[FakeEmbedder().embed_query("x")])
    raw = cold_query(db, "penguins")
    assert raw["documents_read"] >= len(NOTES) + 1 and "Penguins swim fast" in texts_of(raw)


def test_persist_bm25_takes_any_recall_over_chroma(tmp_path):
    chroma = ChromaRecall("docs", path=tmp_path / "db", embedding_model=FakeEmbedder())
    chroma.add_texts(list(NOTES.values()), ids=list(NOTES))
    folder = persist_bm25(chroma)
    assert folder is not None and json.loads((folder / FINGERPRINT_FILE).read_text())["version"] == list(
        chroma.version()
    )
    hybrid = HybridRecall.from_chroma(chroma)
    assert persist_bm25(hybrid) == folder  # already saved at this version: the same folder, nothing rebuilt
    chroma.add_texts(["Kiwis are green"], ids=["kiwi"])
    newer = persist_bm25(BM25Recall(chroma))
    assert newer is not None and newer != folder and not folder.exists()  # the old fingerprint's folder is gone
    fresh = BM25Recall(ChromaRecall("docs", path=tmp_path / "db", embedding_model=FakeEmbedder()))
    assert [h.id for h in fresh.search("kiwis", 3)] == ["kiwi"]
    with pytest.raises(InvalidParameterError, match="only apply when given a ChromaRecall"):
        persist_bm25(hybrid, stemmer="english")
    with pytest.raises(InvalidParameterError, match="persist_bm25 takes"):
        persist_bm25(object())
    empty = ChromaRecall("empty", path=tmp_path / "db", embedding_model=FakeEmbedder())
    empty.get_or_create_collection()
    assert persist_bm25(empty) is None  # nothing to index
