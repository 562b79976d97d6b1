"""The queries and passages ``twostage bench`` runs, and the one Chroma collection every system reads."""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass
from typing import Any

from ..embeddings import BaseEmbedder
from ..recall.chroma import ChromaRecall, make_client
from ..validation import check_positive_int


@dataclass
class BenchData:
    """The passages (``ids`` and ``texts``, aligned) and the queries of one benchmark run."""

    name: str
    ids: list[str]
    texts: list[str]
    queries: list[tuple[str, str]]  # (query id, text), in the order they are run


def load_bench_data(
    dataset_dir: str | os.PathLike[str] | None = None,
    *,
    max_queries: int = 50,
    max_docs: int | None = None,
    seed: int = 13,
) -> BenchData:
    """The bundled sample corpus and demo queries, or a BEIR folder's test split.

    Args:
        dataset_dir: A BEIR folder; ``None``: the sample corpus, its demo queries cycled up to ``max_queries``.
        max_queries: Queries to run.
        max_docs: Keep a seeded random subset of this many passages; for BEIR every relevant document of the
            chosen queries first, filled up with seeded distractors. ``None``: all.
        seed: Seed of that subset.

    Returns:
        The passages and queries.

    Raises:
        InvalidParameterError: ``max_queries`` or ``max_docs`` is not a positive integer, or the BEIR folder
            is unusable (see :func:`~twostage_integrations.evaluation.load_beir`).
    """
    check_positive_int(max_queries, "max_queries")
    if max_docs is not None:
        check_positive_int(max_docs, "max_docs")
    if dataset_dir is None:
        from ..demo import DEMO_QUERIES, load_sample_corpus

        rows = load_sample_corpus()
        corpus = {r["id"]: r["text"] for r in rows}
        queries = [(f"demo-{i % len(DEMO_QUERIES)}", DEMO_QUERIES[i % len(DEMO_QUERIES)]) for i in range(max_queries)]
        keep = list(corpus)
        if max_docs is not None:
            keep = sorted(random.Random(seed).sample(keep, min(max_docs, len(keep))))
        return BenchData("sample corpus", keep, [corpus[d] for d in keep], queries)
    from ..evaluation.beir import load_beir

    data = load_beir(dataset_dir, "test", max_queries=max_queries)
    if max_docs is not None:
        data = data.subset(max_docs, seed=seed)
    keep = list(data.corpus)
    return BenchData(f"{data.name} ({data.split})", keep, [data.corpus[d] for d in keep], list(data.queries.items()))


def build_collection(
    data: BenchData, embedder: BaseEmbedder, db: str | os.PathLike[str], *, progress: bool = True
) -> tuple[Any, Any]:
    """The shared collection: ids and texts, no metadata, so every stack reranks exactly the same text.

    Args:
        data: The passages to index.
        embedder: The embedding model every system uses.
        db: Folder of the persistent Chroma client. The collection is named after a hash of the content and the
            embedding model, so a kept ``db`` is reused on later runs.
        progress: Show a progress bar while embedding.

    Returns:
        ``(client, collection)``: the Chroma client and its collection.
    """
    digest = hashlib.sha256(embedder.name.encode())
    for doc_id, text in zip(data.ids, data.texts, strict=True):
        digest.update(doc_id.encode() + b"\0" + text.encode() + b"\0")
    client = make_client(path=db)
    recall = ChromaRecall(
        f"bench-{digest.hexdigest()[:16]}", client=client, embedding_model=embedder, progress=progress
    )
    recall.add_texts(data.texts, ids=data.ids)
    return client, recall.collection
