"""BEIR-format datasets: reading them, and indexing their corpus once into a cached Chroma collection."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from dataclasses import dataclass, replace
from pathlib import Path

from ..embeddings import BaseEmbedder, as_embedder
from ..errors import InvalidDocumentError
from ..recall.chroma import ChromaRecall, default_db_path, make_client
from ..validation import check_positive_int


@dataclass
class BeirDataset:
    """A BEIR dataset split (see :func:`load_beir`).

    Attributes:
        name: The folder's name.
        path: The folder.
        split: The qrels split (``"test"``, ``"train"``...).
        corpus: Doc id -> passage text (see :func:`passage_text`).
        titles: Doc id -> title (``""`` when none).
        queries: Query id -> text, judged queries only.
        qrels: Query id -> {doc id: relevance}.
        fingerprint: A hash of the corpus ids and texts (the index cache key).
    """

    name: str
    path: Path
    split: str
    corpus: dict[str, str]
    titles: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    fingerprint: str = ""

    def head(self, n: int) -> BeirDataset:
        """The same dataset with only its first judged queries.

        Args:
            n: How many queries to keep.

        Returns:
            A copy with the first ``n`` queries and their qrels.

        Raises:
            InvalidParameterError: If ``n`` is below 1.
        """
        keep = list(self.queries)[: check_positive_int(n, "max_queries")]
        return replace(self, queries={q: self.queries[q] for q in keep}, qrels={q: self.qrels[q] for q in keep})

    def subset(self, max_docs: int, *, seed: int = 13) -> BeirDataset:
        """A smaller corpus: a quick, reproducible stand-in for the full one (easier, so numbers run higher).

        Args:
            max_docs: Documents to keep at most: every one judged for the kept queries first, then random
                distractors.
            seed: Seed of the distractors' draw.

        Returns:
            A copy with the smaller corpus (this dataset when it already has at most ``max_docs``).

        Raises:
            InvalidParameterError: If ``max_docs`` is below 1.
        """
        check_positive_int(max_docs, "max_docs")
        if max_docs >= len(self.corpus):
            return self
        relevant = list(dict.fromkeys(d for q in self.qrels.values() for d in q if d in self.corpus))
        others = sorted(set(self.corpus) - set(relevant))
        keep = relevant + random.Random(seed).sample(others, max(0, max_docs - len(relevant)))
        return replace(self, corpus={d: self.corpus[d] for d in keep}, titles={d: self.titles[d] for d in keep})


def passage_text(title: str, text: str) -> str:
    """How a BEIR document becomes one passage.

    Args:
        title: The document's title (may be empty).
        text: The document's text.

    Returns:
        ``"<title>. <text>"``, or just the text without a title.
    """
    title, text = title.strip(), text.strip()
    return f"{title}. {text}" if title else text


def load_beir(folder: str | os.PathLike[str], split: str = "test", *, max_queries: int | None = None) -> BeirDataset:
    """Read a BEIR folder.

    Args:
        folder: Holds ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``.
        split: Which qrels file to read.
        max_queries: Keep the first N judged queries (in qrels order); ``None`` keeps all.

    Returns:
        The dataset.

    Raises:
        InvalidDocumentError: If a file is missing (the message lists the available splits) or malformed.
        InvalidParameterError: If ``max_queries`` is below 1.
    """
    path = Path(folder).expanduser()
    files = {
        "corpus": path / "corpus.jsonl",
        "queries": path / "queries.jsonl",
        "qrels": path / "qrels" / f"{split}.tsv",
    }
    for what, file in files.items():
        if not file.is_file():
            hint = f" (available splits: {_splits(path)})" if what == "qrels" else ""
            raise InvalidDocumentError(
                f"{file} not found: a BEIR folder needs corpus.jsonl, queries.jsonl and qrels/<split>.tsv{hint}"
            )
    if max_queries is not None:
        check_positive_int(max_queries, "max_queries")
    qrels: dict[str, dict[str, int]] = {}
    with open(files["qrels"], encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            parts = line.rstrip("\n").split("\t")
            if not line.strip() or (lineno == 1 and not parts[-1].lstrip("-").isdigit()):
                continue  # blank line or header
            if len(parts) < 3:
                raise InvalidDocumentError(f"{files['qrels']}:{lineno}: expected 'query-id<TAB>corpus-id<TAB>score'")
            qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    all_queries = {row["_id"]: row["text"] for row in _jsonl(files["queries"])}
    qids = [q for q in qrels if q in all_queries][:max_queries]
    digest = hashlib.sha256()
    corpus: dict[str, str] = {}
    titles: dict[str, str] = {}
    for row in _jsonl(files["corpus"]):
        doc_id = str(row["_id"])
        corpus[doc_id] = passage_text(row.get("title") or "", row.get("text") or "")
        titles[doc_id] = row.get("title") or ""
        digest.update(doc_id.encode() + b"\0" + corpus[doc_id].encode() + b"\0")
    return BeirDataset(
        name=path.name,
        path=path,
        split=split,
        corpus=corpus,
        titles=titles,
        queries={q: all_queries[q] for q in qids},
        qrels={q: qrels[q] for q in qids},
        fingerprint=digest.hexdigest(),
    )


def _splits(path: Path) -> str:
    return ", ".join(sorted(p.stem for p in (path / "qrels").glob("*.tsv"))) or "none"


def _jsonl(file: Path):
    with open(file, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InvalidDocumentError(f"{file}:{lineno}: not valid JSON ({exc.msg})") from exc


def collection_name(dataset: BeirDataset, embedder: BaseEmbedder) -> str:
    """The name of a dataset's cached Chroma collection.

    Args:
        dataset: The dataset.
        embedder: The embedder that indexes it.

    Returns:
        ``beir-<dataset name>-<hash of (corpus content, embedding model)>``.
    """
    key = hashlib.sha256(f"{dataset.fingerprint}\0{embedder.name}".encode()).hexdigest()[:12]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", dataset.name).strip("-._")[:40] or "dataset"
    return f"beir-{slug}-{key}"


def index_corpus(
    dataset: BeirDataset,
    *,
    db: str | os.PathLike[str] | None = None,
    embedding_model: str | os.PathLike[str] | BaseEmbedder | None = None,
    progress: bool = True,
) -> ChromaRecall:
    """The dataset's corpus in an embedded Chroma collection keyed by dataset + embedding model.

    Embeds only what is missing, so re-runs (and interrupted runs) reuse the stored vectors.

    Args:
        dataset: The dataset.
        db: The embedded database folder; default ``$TWOSTAGE_DB``, else the per-user data folder.
        embedding_model: The embedder or model name; default ``TWOSTAGE_EMBEDDING_MODEL``, else all-MiniLM-L6-v2.
        progress: Show progress bars while embedding.

    Returns:
        A dense recall over the collection, whose ids are the BEIR doc ids.
    """
    embedder = as_embedder(embedding_model)
    client = make_client(path=db if db is not None else default_db_path())
    chroma = ChromaRecall(
        collection_name(dataset, embedder), client=client, embedding_model=embedder, progress=progress
    )
    ids = list(dataset.corpus)
    chroma.get_or_create_collection()  # so count() works on the first run
    if chroma.count() != len(ids):
        chroma.add_texts(
            [dataset.corpus[d] for d in ids], metadatas=[{"title": dataset.titles[d]} for d in ids], ids=ids
        )
    return chroma
