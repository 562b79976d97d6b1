"""The ONNX Runtime embedder against sentence-transformers on real SciFact text, and the torch-free query path.

The export cache lives in the session's temporary folder (conftest sets ``TWOSTAGE_CACHE_DIR``, subprocesses
inherit it). No timing assertions: start-up time is measured elsewhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from twostage_integrations import ChromaRecall
from twostage_integrations.embeddings import OnnxEmbedder

pytest.importorskip("onnxruntime")
pytest.importorskip("tokenizers")

# Modules the query path must not import once the ONNX graphs are cached.
HEAVY = ("torch", "transformers", "sentence_transformers")
PASSAGES = [
    "Aspirin lowers the risk of a first stroke in adults at high cardiovascular risk.",
    "Vitamin D deficiency is common in northern countries during winter.",
    "Statins reduce LDL cholesterol and cardiovascular events.",
]


def _jsonl(path: Path, n: int) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            rows.append(json.loads(line))
            if len(rows) == n:
                break
    return rows


@pytest.fixture(scope="module")
def onnx_embedder() -> OnnxEmbedder:
    return OnnxEmbedder()


@pytest.fixture(scope="module")
def passages200(scifact_dir) -> list[str]:
    rows = _jsonl(scifact_dir / "corpus.jsonl", 200)
    return [f"{r.get('title') or ''}. {r.get('text') or ''}".strip() for r in rows]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_passages_match_sentence_transformers(onnx_embedder, embedder, passages200):
    assert len(passages200) == 200 and onnx_embedder.name == embedder.name
    ours, theirs = onnx_embedder.embed(passages200), embedder.embed(passages200)
    assert ours.shape == theirs.shape == (200, 384) and ours.dtype == np.float32
    cos = _cosines(ours, theirs)
    assert cos.min() >= 0.9999, f"lowest cosine {cos.min():.6f} at passage {int(cos.argmin())}"
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    # Long abstracts are cut at max_seq_length (256) by both: at least one passage here is longer than that.
    lengths = [len(e.ids) for e in onnx_embedder.model.tokenizer.encode_batch(passages200)]
    assert max(lengths) == onnx_embedder.model.layout.max_length == embedder.model.max_seq_length
    assert float((ours @ ours.T)[~np.eye(200, dtype=bool)].max()) < 0.999  # distinct vectors, not a constant


def test_queries_match_sentence_transformers(onnx_embedder, embedder, scifact_dir):
    queries = [r["text"] for r in _jsonl(scifact_dir / "queries.jsonl", 100)] + ["  padded query  ", ""]
    cos = _cosines(onnx_embedder.embed_queries(queries), embedder.embed_queries(queries))
    assert cos.min() >= 0.9999
    assert onnx_embedder.embed_query(queries[0]).shape == (384,)


def test_collection_ingested_with_torch_is_queried_with_onnx(tmp_path, onnx_embedder, embedder, passages200):
    torch_recall = ChromaRecall("ingested-torch", path=tmp_path / "db", embedding_model=embedder)
    torch_recall.add_texts(passages200[:50], ids=[str(i) for i in range(50)])
    onnx_recall = ChromaRecall("ingested-torch", path=tmp_path / "db", embedding_model=onnx_embedder)
    for i in (3, 17, 41):
        query = passages200[i][:200]
        ours, theirs = onnx_recall.search(query, limit=5), torch_recall.search(query, limit=5)
        assert [h.id for h in ours] == [h.id for h in theirs] and ours[0].id == str(i)
    # ... and the other way round: ONNX ingests, torch queries (the collection records the same model name).
    ChromaRecall("ingested-onnx", path=tmp_path / "db", embedding_model=onnx_embedder).add_texts(passages200[:10])
    hits = ChromaRecall("ingested-onnx", path=tmp_path / "db", embedding_model=embedder).search(passages200[4], limit=1)
    assert hits[0].text == passages200[4]


# -- the torch-free query path, in fresh interpreters ---------------------------------------------------------------
# The reranker's default, backend auto, runs whichever exact engine is faster on the machine (timed); these tests
# are about the ONNX path, so they name it (tests/test_engine_auto.py: a cached ONNX pick imports no torch either).
RERANK_ONNX = {"TWOSTAGE_RERANK_BACKEND": "onnx"}


def _run(code: str, tmp_path: Path) -> list[str]:
    """Run ``code`` in a fresh interpreter with the default embedding backend and the ONNX reranker; its last line
    lists the heavy modules."""
    env = {k: v for k, v in os.environ.items() if k != "TWOSTAGE_EMBEDDING_BACKEND"} | RERANK_ONNX
    tail = f"\nprint('MODULES', sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    proc = subprocess.run(
        [sys.executable, "-c", "import sys\n" + code + tail],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "exporting" not in proc.stderr  # the cached graphs were reused
    return proc.stdout.strip().splitlines()


@pytest.fixture(scope="module")
def db(tmp_path_factory, rerank_model_path) -> Path:
    """A collection ingested by the CLI, then queried once by the CLI so both ONNX graphs are exported."""
    folder = tmp_path_factory.mktemp("onnx-path")
    for i, text in enumerate(PASSAGES):
        (folder / f"p{i}.txt").write_text(text, encoding="utf-8")
    db = folder / "db"
    for args in (["ingest", str(folder), "-c", "torchfree", "--db", str(db)],
                 ["query", "aspirin stroke", "-c", "torchfree", "--db", str(db)]):  # fmt: skip
        proc = subprocess.run(
            [sys.executable, "-c", "from twostage_integrations.cli import app; app()", *args],
            capture_output=True,
            text=True,
            timeout=900,
            env=os.environ | RERANK_ONNX,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
    return db


def test_cli_query_imports_no_torch(db, tmp_path):
    code = (
        f"sys.argv = ['twostage', 'query', 'aspirin stroke', '-c', 'torchfree', '--db', {str(db)!r}]\n"
        "from twostage_integrations.cli import app\n"
        "try:\n    app()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
    )
    out = _run(code, tmp_path)
    assert out[-1] == "MODULES []"
    assert any("Aspirin lowers" in line for line in out)  # it did answer the query


def test_serve_app_imports_no_torch(rerank_model_path, db, tmp_path):
    code = (
        "from fastapi.testclient import TestClient\n"
        "from twostage_integrations import CrossEncoderReranker\n"
        "from twostage_integrations.server import create_app\n"
        f"app = create_app(CrossEncoderReranker({rerank_model_path!r}))\n"
        "with TestClient(app) as client:\n"
        f"    body = {{'query': 'aspirin and stroke', 'documents': {PASSAGES!r}, 'top_n': 3}}\n"
        "    r = client.post('/v2/rerank', json=body)\n"
        "    assert r.status_code == 200, r.text\n"
        "    print('RANKED', sorted(x['index'] for x in r.json()['results']))\n"
    )
    out = _run(code, tmp_path)
    assert out[-2:] == ["RANKED [0, 1, 2]", "MODULES []"]  # every document scored by the ONNX cross-encoder


def test_langchain_adapter_imports_no_torch(rerank_model_path, db, tmp_path):
    code = (
        "from twostage_integrations.langchain import TwoStageRetriever\n"
        f"r = TwoStageRetriever.from_collection('torchfree', path={str(db)!r}, reranker={rerank_model_path!r}, "
        "limit=3, top_k=1)\n"
        "print('TOP', r.invoke('aspirin stroke')[0].page_content[:14])\n"
    )
    out = _run(code, tmp_path)
    assert out[-2:] == ["TOP Aspirin lowers", "MODULES []"]


def test_llama_index_adapter_imports_no_torch(rerank_model_path, db, tmp_path):
    code = (
        "from twostage_integrations import ChromaRecall, CrossEncoderReranker, TwoStagePipeline\n"
        "from twostage_integrations.llama_index import TwoStageRetriever\n"
        f"pipe = TwoStagePipeline(ChromaRecall('torchfree', path={str(db)!r}), "
        f"CrossEncoderReranker({rerank_model_path!r}), limit=3, top_k=1)\n"
        "print('TOP', TwoStageRetriever(pipe).retrieve('aspirin stroke')[0].node.get_content()[:14])\n"
    )
    out = _run(code, tmp_path)
    assert out[-2:] == ["TOP Aspirin lowers", "MODULES []"]
