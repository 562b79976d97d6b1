"""Turning files into passages for ``twostage ingest``.

- ``.txt`` / ``.md``: split on blank lines into paragraphs, then packed greedily into passages of at
  most ``max_chars`` characters (default 1,000). Each passage after the first starts with the last
  ``overlap_chars`` (default 150, cut at a word boundary) of the one before, so a sentence that straddles
  a boundary is still found. A paragraph longer than ``max_chars`` is cut at word boundaries.
  Metadata: ``source`` (the path as given) and ``passage`` (0-based index within the file).
- ``.jsonl``: one passage per line, from the ``text`` field. ``id`` or ``_id`` becomes the passage id;
  every other field becomes metadata (lists/dicts Chroma cannot store are kept as JSON strings, nulls are
  dropped). ``source`` and ``line`` are added.

Passage ids are the caller's (``id``/``_id``) or a hash of the passage text, so ingesting the same files
again, or re-running an interrupted ingest, stores every passage exactly once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InvalidDocumentError
from .validation import content_id, is_storable

TEXT_SUFFIXES = {".txt", ".md", ".markdown"}
JSONL_SUFFIXES = {".jsonl"}


@dataclass
class Passage:
    text: str
    id: str
    metadata: dict[str, Any] = field(default_factory=dict)


def split_passages(text: str, *, max_chars: int = 1000, overlap_chars: int = 150) -> list[str]:
    """Pack paragraphs into passages of at most ``max_chars`` (plus the carried overlap)."""
    if overlap_chars >= max_chars:
        raise InvalidDocumentError(f"overlap_chars ({overlap_chars}) must be smaller than max_chars ({max_chars})")
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]
    pieces: list[str] = []
    for para in paragraphs:
        if para:
            pieces.extend(_cut_words(para, max_chars))
    passages: list[str] = []
    current = ""
    for piece in pieces:
        if current and len(current) + 2 + len(piece) > max_chars:
            passages.append(current)
            tail = _tail(current, overlap_chars)
            current = f"{tail} {piece}" if tail else piece
        else:
            current = f"{current}\n\n{piece}" if current else piece
    if current:
        passages.append(current)
    return passages


def _cut_words(text: str, max_chars: int) -> Iterator[str]:
    words, current = text.split(" "), ""
    for word in words:
        if current and len(current) + 1 + len(word) > max_chars:
            yield current
            current = word
        else:
            current = f"{current} {word}" if current else word
    if current:
        yield current


def _tail(text: str, n: int) -> str:
    if n <= 0:
        return ""
    tail = text[-n:]
    cut = tail.find(" ")
    return tail[cut + 1 :].strip() if cut >= 0 and len(text) > n else tail.strip()


def read_passages(paths: Iterable[str | Path], *, max_chars: int = 1000, overlap_chars: int = 150) -> list[Passage]:
    """All passages of ``paths`` (files, or folders searched recursively for supported files).

    Raises :class:`InvalidDocumentError` naming the file (and line) on anything unreadable, before
    anything is stored."""
    passages: list[Passage] = []
    for file in _expand(paths):
        if file.suffix.lower() in JSONL_SUFFIXES:
            passages.extend(_read_jsonl(file))
        else:
            text = file.read_text(encoding="utf-8", errors="replace")
            for i, chunk in enumerate(split_passages(text, max_chars=max_chars, overlap_chars=overlap_chars)):
                passages.append(Passage(text=chunk, id=content_id(chunk), metadata={"source": str(file), "passage": i}))
    return passages


def _expand(paths: Iterable[str | Path]) -> list[Path]:
    files: list[Path] = []
    supported = TEXT_SUFFIXES | JSONL_SUFFIXES
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in supported))
        elif path.is_file():
            if path.suffix.lower() not in supported:
                raise InvalidDocumentError(f"{path}: unsupported file type; ingest .txt, .md or .jsonl files")
            files.append(path)
        else:
            raise InvalidDocumentError(f"{path}: no such file or folder")
    if not files:
        raise InvalidDocumentError("no .txt, .md or .jsonl files found in the given paths")
    return files


def _read_jsonl(file: Path) -> Iterator[Passage]:
    with open(file, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidDocumentError(f"{file}:{lineno}: not valid JSON ({exc.msg})") from exc
            if not isinstance(record, dict) or not isinstance(record.get("text"), str) or not record["text"].strip():
                raise InvalidDocumentError(f"{file}:{lineno}: each line needs a non-empty string field 'text'")
            text = record.pop("text")
            doc_id = record.pop("id", None) or record.pop("_id", None)
            meta: dict[str, Any] = {"source": str(file), "line": lineno}
            for key, value in record.items():
                if value is None:
                    continue
                meta[key] = value if is_storable(value) else json.dumps(value, ensure_ascii=False)
            yield Passage(text=text, id=str(doc_id) if doc_id is not None else content_id(text), metadata=meta)
