"""Turning files into passages for ``twostage ingest``.

- ``.txt`` / ``.md``: split on blank lines into paragraphs, then packed greedily into passages of at
  most ``max_chars`` characters (default 1,000). Each passage after the first starts with the last
  ``overlap_chars`` (default 150, cut at a word boundary) of the one before, so a sentence that straddles
  a boundary is still found. A paragraph longer than ``max_chars`` is cut at word boundaries.
  Metadata: ``source`` (the path as given, e.g. ``notes/aspirin.md``), ``filename`` (``aspirin.md``, what
  people filter on: ``--filter '{"filename": "aspirin.md"}'``) and ``passage`` (0-based index within the file).
- ``.jsonl``: one passage per line, from the ``text`` field. ``id`` or ``_id`` becomes the passage id;
  every other field becomes metadata (lists/dicts Chroma cannot store are kept as JSON strings, nulls are
  dropped). ``source``, ``filename`` and ``line`` are added.
- Files that are not UTF-8 text (NUL bytes, or bytes that do not decode: a binary renamed ``.txt``, a
  Latin-1 file) are skipped with a warning, never stored as garbage; :func:`read_documents` lists them.

Passage ids are the caller's (``id``/``_id``) or a hash of the passage text, so ingesting the same files
again, or re-running an interrupted ingest, stores every passage exactly once.

Streaming (what ``twostage ingest`` does, see docs/ingest.md): :func:`scan_documents` reads every file once to
validate and count its passages, holding none of them, so a bad line is refused (``file:line``) before anything is
stored; :func:`iter_passages` then yields the passages one at a time. JSONL files are read line by line; a
``.txt``/``.md`` file is read whole (one file at a time, never the corpus).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InvalidDocumentError
from .validation import check_metadata, content_id, is_storable

TEXT_SUFFIXES = {".txt", ".md", ".markdown"}
JSONL_SUFFIXES = {".jsonl"}

log = logging.getLogger(__name__)


@dataclass
class Passage:
    text: str
    id: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class SkippedFile:
    """A file left out of the ingest, and why (in words a user can act on)."""

    path: Path
    reason: str


@dataclass
class ReadResult:
    """What :func:`read_documents` found: the passages, and the files it skipped."""

    passages: list[Passage] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)


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


@dataclass
class ScanResult:
    """What :func:`scan_documents` found: the files to read, how many passages they hold, the files skipped."""

    files: list[Path] = field(default_factory=list)
    passages: int = 0
    skipped: list[SkippedFile] = field(default_factory=list)


def scan_documents(paths: Iterable[str | Path], *, max_chars: int = 1000, overlap_chars: int = 150) -> ScanResult:
    """Validate every passage of ``paths`` and count them, holding none: the cheap first pass of a streaming ingest.

    Args:
        paths: Files, or folders searched recursively for .txt/.md/.jsonl files.
        max_chars: Passage size for .txt/.md, in characters.
        overlap_chars: Characters carried over between .txt/.md passages.

    Returns:
        The readable files (for :func:`iter_passages`), their passage count, and the files skipped because they are
        not UTF-8 text.

    Raises:
        InvalidDocumentError: A missing or unsupported path, an unreadable file, or a JSONL line that is not a JSON
            object with a non-empty ``text`` or holds metadata Chroma cannot store (naming ``file:line``).
    """
    result = ScanResult()
    for file in _expand(paths):
        try:
            count = sum(1 for passage in _file_passages(file, max_chars, overlap_chars) if _check(passage))
        except _NotText as exc:
            result.skipped.append(SkippedFile(file, exc.reason))
            continue
        result.files.append(file)
        result.passages += count
    return result


def iter_passages(files: Iterable[Path], *, max_chars: int = 1000, overlap_chars: int = 150) -> Iterator[Passage]:
    """The passages of ``files`` (as listed by :func:`scan_documents`), one at a time: nothing is read ahead.

    Args:
        files: Files to read, in order.
        max_chars: Passage size for .txt/.md, in characters.
        overlap_chars: Characters carried over between .txt/.md passages.

    Yields:
        Each passage, in file order.

    Raises:
        InvalidDocumentError: A file became unreadable or invalid since it was scanned.
    """
    for file in files:
        try:
            yield from _file_passages(file, max_chars, overlap_chars)
        except _NotText as exc:  # changed since the scan; what is already yielded stays valid
            raise InvalidDocumentError(f"{file}: {exc.reason}") from None


def read_documents(paths: Iterable[str | Path], *, max_chars: int = 1000, overlap_chars: int = 150) -> ReadResult:
    """All passages of ``paths`` (files, or folders searched recursively for supported files), and the files
    skipped because they are not UTF-8 text. Holds every passage: for large corpora use :func:`scan_documents` and
    :func:`iter_passages`.

    Raises :class:`InvalidDocumentError` naming the file (and line) on anything else unreadable, before
    anything is stored."""
    scan = scan_documents(paths, max_chars=max_chars, overlap_chars=overlap_chars)
    passages = list(iter_passages(scan.files, max_chars=max_chars, overlap_chars=overlap_chars))
    return ReadResult(passages=passages, skipped=scan.skipped)


def read_passages(paths: Iterable[str | Path], *, max_chars: int = 1000, overlap_chars: int = 150) -> list[Passage]:
    """The passages of :func:`read_documents`; skipped (non-text) files are logged as warnings."""
    result = read_documents(paths, max_chars=max_chars, overlap_chars=overlap_chars)
    for skipped in result.skipped:
        log.warning("skipped %s: %s", skipped.path, skipped.reason)
    return result.passages


class _NotText(Exception):
    """A file that is not UTF-8 text: skipped, with the reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _check(passage: Passage) -> bool:
    """Refuse, naming where it came from, a passage Chroma would refuse later (after earlier batches were stored)."""
    try:
        check_metadata(passage.metadata, 0)
    except InvalidDocumentError as exc:
        where = str(passage.metadata.get("source"))
        if "line" in passage.metadata:
            where += f":{passage.metadata['line']}"
        raise InvalidDocumentError(f"{where}: {str(exc).replace('metadatas[0]', 'metadata')}") from None
    return True


def _file_passages(file: Path, max_chars: int, overlap_chars: int) -> Iterator[Passage]:
    meta = {"source": str(file), "filename": file.name}
    if file.suffix.lower() in JSONL_SUFFIXES:
        yield from _read_jsonl(file, _jsonl_lines(file), meta)
        return
    text = _read_text(file)
    for i, chunk in enumerate(split_passages(text, max_chars=max_chars, overlap_chars=overlap_chars)):
        yield Passage(text=chunk, id=content_id(chunk), metadata={**meta, "passage": i})


def _read_text(file: Path) -> str:
    """The text of a UTF-8 file; :class:`_NotText` for anything binary or in another encoding."""
    try:
        data = file.read_bytes()
    except OSError as exc:  # unreadable (permissions, a dangling link): refused before anything is embedded
        raise InvalidDocumentError(f"{file}: cannot read it ({exc.strerror or exc})") from None
    return _decode(data, 0, first=True)


def _jsonl_lines(file: Path) -> Iterator[str]:
    """The lines of a JSONL file, decoded one at a time (split on ``\\n`` only: U+2028 may sit in a JSON string)."""
    try:
        handle = file.open("rb")
    except OSError as exc:
        raise InvalidDocumentError(f"{file}: cannot read it ({exc.strerror or exc})") from None
    with handle:
        offset = 0
        for raw in handle:
            yield _decode(raw, offset, first=offset == 0)
            offset += len(raw)


def _decode(data: bytes, offset: int, *, first: bool) -> str:
    if b"\0" in data:  # text files never hold NUL bytes; binaries nearly always do
        raise _NotText("binary file (NUL bytes), not text")
    try:
        return data.decode("utf-8-sig" if first else "utf-8")
    except UnicodeDecodeError as exc:
        raise _NotText(
            f"not UTF-8 text (undecodable byte at offset {offset + exc.start}); if it is text, convert it first, "
            f"e.g. iconv -f latin1 -t utf-8"
        ) from None


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


def _read_jsonl(file: Path, lines: Iterable[str], base: dict[str, Any]) -> Iterator[Passage]:
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidDocumentError(f"{file}:{lineno}: not valid JSON ({exc.msg})") from exc
        if not isinstance(record, dict) or not isinstance(record.get("text"), str) or not record["text"].strip():
            raise InvalidDocumentError(f"{file}:{lineno}: each line needs a non-empty string field 'text'")
        passage_text = record.pop("text")
        doc_id = record.pop("id", None) or record.pop("_id", None)
        meta: dict[str, Any] = {**base, "line": lineno}
        for key, value in record.items():
            if value is None:
                continue
            meta[key] = value if is_storable(value) else json.dumps(value, ensure_ascii=False)
        yield Passage(
            text=passage_text, id=str(doc_id) if doc_id is not None else content_id(passage_text), metadata=meta
        )
