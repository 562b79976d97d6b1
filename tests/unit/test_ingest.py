"""Files → passages for `twostage ingest`."""

from __future__ import annotations

import json

import pytest

from twostage_integrations.errors import InvalidDocumentError
from twostage_integrations.ingest import read_passages, split_passages


def test_paragraphs_are_packed_up_to_max_chars_with_overlap():
    paras = [f"Paragraph {i} " + "word " * 40 for i in range(6)]  # ~215 chars each
    passages = split_passages("\n\n".join(paras), max_chars=500, overlap_chars=60)
    assert len(passages) >= 3
    assert passages[0].startswith("Paragraph 0") and "Paragraph 1" in passages[0]
    for prev, nxt in zip(passages, passages[1:], strict=False):
        tail = nxt.split("\n\n")[0].split(" Paragraph")[0]
        assert prev.endswith(tail.strip())  # each passage starts with the end of the previous one
        assert len(nxt) <= 500 + 60 + 1
    joined = " ".join(passages)
    assert all(f"Paragraph {i}" in joined for i in range(6))


def test_long_paragraph_is_cut_at_word_boundaries():
    text = " ".join(f"w{i}" for i in range(600))
    passages = split_passages(text, max_chars=300, overlap_chars=0)
    assert all(len(p) <= 300 for p in passages)
    assert " ".join(passages).split() == text.split()


def test_overlap_must_be_smaller_than_size():
    with pytest.raises(InvalidDocumentError):
        split_passages("abc", max_chars=100, overlap_chars=100)


def test_jsonl_fields_become_metadata(tmp_path):
    f = tmp_path / "docs.jsonl"
    rows = [
        {"_id": "a1", "text": "Aspirin and stroke.", "title": "Aspirin", "tags": {"x": 1}, "year": 2020, "none": None},
        {"text": "No id here."},
    ]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    p1, p2 = read_passages([f])
    assert (p1.id, p1.text) == ("a1", "Aspirin and stroke.")
    assert p1.metadata == {
        "source": str(f),
        "filename": "docs.jsonl",
        "line": 1,
        "title": "Aspirin",
        "tags": '{"x": 1}',
        "year": 2020,
    }
    assert p2.id != p1.id and len(p2.id) == 32


@pytest.mark.parametrize(
    "line, message", [("{not json", "not valid JSON"), ('{"title": "x"}', "'text'"), ('{"text": ""}', "'text'")]
)
def test_bad_jsonl_names_file_and_line(tmp_path, line, message):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"text": "fine"}\n' + line + "\n")
    with pytest.raises(InvalidDocumentError, match=rf"bad.jsonl:2: .*{message}"):
        read_passages([f])


def test_folders_unsupported_and_missing_paths(tmp_path):
    (tmp_path / "a.md").write_text("# Title\n\nBody text.")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("Other body.")
    (tmp_path / "c.pdf").write_bytes(b"%PDF")
    assert [p.metadata["source"] for p in read_passages([tmp_path])] == [
        str(tmp_path / "a.md"),
        str(tmp_path / "sub" / "b.txt"),
    ]
    with pytest.raises(InvalidDocumentError, match="unsupported"):
        read_passages([tmp_path / "c.pdf"])
    with pytest.raises(InvalidDocumentError, match="no such file"):
        read_passages([tmp_path / "nope.txt"])
