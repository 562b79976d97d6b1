"""Streaming ingest without weights: files are read lazily, one batch is held at a time, stored passages are
neither re-embedded nor stored twice, and a bad line is refused before anything is stored."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from twostage_integrations import ChromaRecall
from twostage_integrations import ingest as ingest_module
from twostage_integrations.cli import app
from twostage_integrations.errors import InvalidDocumentError
from twostage_integrations.ingest import iter_passages, read_documents, scan_documents
from twostage_integrations.testing import FakeEmbedder


def write_jsonl(path, n: int, start: int = 0) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for i in range(start, start + n):
            f.write(json.dumps({"id": f"p{i}", "text": f"passage {i} about topic {i % 7}", "n": i}) + "\n")


def records(n: int, start: int = 0) -> list[tuple[str, dict, str]]:
    return [(f"passage {i} about topic {i % 7}", {"n": i}, f"p{i}") for i in range(start, start + n)]


class Counted:
    """An iterable that counts how many items were pulled from it."""

    def __init__(self, items) -> None:
        self.items, self.pulled = items, 0

    def __iter__(self) -> Iterator:
        for item in self.items:
            self.pulled += 1
            yield item


def test_jsonl_is_read_line_by_line_as_passages_are_consumed(tmp_path, monkeypatch):
    data = tmp_path / "many.jsonl"
    write_jsonl(data, 1000)
    opened: list[Counted] = []
    real_lines = ingest_module._jsonl_lines

    def counted_lines(file):
        opened.append(Counted(real_lines(file)))
        return iter(opened[-1])

    monkeypatch.setattr(ingest_module, "_jsonl_lines", counted_lines)
    passages = iter_passages([data])
    first = [next(passages) for _ in range(3)]
    assert [p.id for p in first] == ["p0", "p1", "p2"]
    assert opened[0].pulled == 3  # not the 1000 lines of the file
    assert sum(1 for _ in passages) == 997


def test_scan_counts_and_validates_without_yielding_passages(tmp_path):
    data = tmp_path / "rows.jsonl"
    write_jsonl(data, 40)
    (tmp_path / "notes.md").write_text("First paragraph.\n\nSecond paragraph.")
    (tmp_path / "bin.txt").write_bytes(b"\x00\x01")
    scan = scan_documents([tmp_path], max_chars=20, overlap_chars=0)
    assert [f.name for f in scan.files] == ["notes.md", "rows.jsonl"]
    assert [s.path.name for s in scan.skipped] == ["bin.txt"]
    assert scan.passages == 42 == len(list(iter_passages(scan.files, max_chars=20, overlap_chars=0)))
    assert scan.passages == len(read_documents([tmp_path], max_chars=20, overlap_chars=0).passages)


def test_scan_names_the_line_of_metadata_chroma_cannot_store(tmp_path):
    data = tmp_path / "keys.jsonl"
    data.write_text('{"text": "fine"}\n{"text": "bad key", "": 1}\n')
    with pytest.raises(InvalidDocumentError, match=r"keys\.jsonl:2: .*empty key"):
        scan_documents([data])


def test_add_stream_pulls_one_batch_at_a_time(tmp_path):
    embedder = FakeEmbedder()
    source = Counted(records(50))
    pulled_at_embed: list[int] = []
    real_embed = embedder.embed

    def embed(texts, **kwargs):
        pulled_at_embed.append(source.pulled)
        return real_embed(texts, **kwargs)

    embedder.embed = embed  # type: ignore[method-assign]
    recall = ChromaRecall("stream-batches", path=tmp_path / "db", embedding_model=embedder)
    result = recall.add_stream(source, batch_size=20)
    assert embedder.batches == [20, 20, 10]
    assert pulled_at_embed == [20, 40, 50]  # the source is read one batch ahead of nothing
    assert (result.added, result.unchanged, result.ids) == (50, 0, [])
    assert recall.count() == 50 and recall.embedded == 50


def test_rerun_after_an_interruption_embeds_only_the_missing(tmp_path):
    embedder = FakeEmbedder()
    recall = ChromaRecall("stream-resume", path=tmp_path / "db", embedding_model=embedder)

    def dies_after(n: int):
        yield from records(n)
        raise KeyboardInterrupt  # Ctrl-C while the next batch is being read

    with pytest.raises(KeyboardInterrupt):
        recall.add_stream(dies_after(25), batch_size=10)
    assert recall.count() == 20 and sum(embedder.batches) == 20  # the two full batches were stored

    embedder.batches.clear()
    again = ChromaRecall("stream-resume", path=tmp_path / "db", embedding_model=embedder)
    result = again.add_stream(records(60), batch_size=10)
    assert (result.added, result.updated, result.unchanged) == (40, 0, 20)
    assert sum(embedder.batches) == 40 == again.embedded
    stored = again.collection.get(include=["documents"])
    assert sorted(stored["ids"]) == sorted(f"p{i}" for i in range(60))  # each once
    assert dict(zip(stored["ids"], stored["documents"], strict=True)) == {i: t for t, _, i in records(60)}


def test_changed_text_under_a_stored_id_is_re_embedded(tmp_path):
    embedder = FakeEmbedder()
    recall = ChromaRecall("stream-update", path=tmp_path / "db", embedding_model=embedder)
    recall.add_stream(records(10), batch_size=4)
    changed = [("a new text for p3", {"n": 3}, "p3"), *records(10)[4:]]
    result = recall.add_stream(changed, batch_size=4)
    assert (result.added, result.updated, result.unchanged) == (0, 1, 6)
    assert recall.embedded == 11 and recall.collection.get(ids=["p3"])["documents"] == ["a new text for p3"]


def test_cli_refuses_a_bad_line_before_storing_anything(tmp_path, monkeypatch):
    data = tmp_path / "late-error.jsonl"
    write_jsonl(data, 700)
    with open(data, "a", encoding="utf-8") as f:
        f.write('{"title": "no text field"}\n')
    made: list[str] = []
    monkeypatch.setattr("twostage_integrations.cli.ingest.make_recall", lambda *a, **k: made.append("recall"))
    db = tmp_path / "db"
    result = CliRunner().invoke(app, ["ingest", str(data), "-c", "late-error", "--db", str(db), "--batch-size", "100"])
    assert result.exit_code == 2
    assert "late-error.jsonl:701" in result.output and "'text'" in result.output
    assert made == [] and not db.exists()  # refused before a collection was opened


def test_cli_batch_size_must_be_positive(tmp_path):
    data = tmp_path / "rows.jsonl"
    write_jsonl(data, 3)
    result = CliRunner().invoke(app, ["ingest", str(data), "-c", "bad-batch", "--batch-size", "0"])
    assert result.exit_code == 2 and "--batch-size" in result.output


def test_changed_metadata_under_a_stored_text_keeps_its_vector(tmp_path):
    """The same passages ingested again with other metadata (e.g. the file moved, so `source` changed) are
    updated without being embedded again: their stored vectors are written back with the new metadata."""
    embedder = FakeEmbedder()
    recall = ChromaRecall("stream-meta", path=tmp_path / "db", embedding_model=embedder)
    recall.add_stream(records(10), batch_size=4)
    before = recall.collection.get(ids=["p3"], include=["embeddings"])["embeddings"][0]
    moved = [(t, {**m, "source": "elsewhere.jsonl"}, i) for t, m, i in records(10)[:6]]
    moved += [("a new text for p8", {"n": 8}, "p8")]
    result = recall.add_stream(moved, batch_size=4)
    assert (result.added, result.updated, result.unchanged) == (0, 7, 0)
    assert recall.embedded == 11  # 10 at first, then only p8's new text
    got = recall.collection.get(ids=["p3", "p8"], include=["metadatas", "embeddings", "documents"])
    meta = dict(zip(got["ids"], got["metadatas"], strict=True))
    assert meta["p3"] == {"n": 3, "source": "elsewhere.jsonl"}
    vec = dict(zip(got["ids"], got["embeddings"], strict=True))
    assert list(vec["p3"]) == pytest.approx(list(before))
    assert list(vec["p8"]) == pytest.approx(list(embedder.embed(["a new text for p8"])[0]), abs=1e-6)
    assert recall.search("passage 3 about topic 3", 1)[0].id == "p3"
