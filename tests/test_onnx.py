"""The ONNX Runtime cross-encoder engine against sentence-transformers' torch path, on real SciFact pairs.

The export cache lives in a per-session temporary folder (conftest sets ``TWOSTAGE_CACHE_DIR``), so each run
exports once, as a fresh machine would. No timing assertions: speed is measured by ``twostage bench``.
"""

from __future__ import annotations

import logging
import os
import random
import re
import subprocess
import sys

import numpy as np
import pytest

from twostage_integrations.evaluation.beir import load_beir
from twostage_integrations.rerank import onnx as onnx_engine
from twostage_integrations.rerank.cross_encoder import CrossEncoderReranker

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def scifact(scifact_dir):
    return load_beir(scifact_dir, "test")


@pytest.fixture(scope="module")
def pairs200(scifact):
    """200 (claim, abstract) pairs: 40 test claims × (their relevant abstracts + seeded random ones)."""
    rng, docs, out = random.Random(7), sorted(scifact.corpus), []
    for qid in list(scifact.queries)[:40]:
        ids = list(scifact.qrels[qid])[:2]
        ids += rng.sample(docs, 5 - len(ids))
        out += [(scifact.queries[qid], scifact.corpus[d]) for d in ids]
    return out


@pytest.fixture(scope="module")
def torch_ce(rerank_model_path):
    return CrossEncoderReranker(rerank_model_path, backend="torch")


@pytest.fixture(scope="module")
def onnx_ce(rerank_model_path):
    return CrossEncoderReranker(rerank_model_path, backend="onnx")


def test_fp32_scores_equal_torch_sigmoid(torch_ce, onnx_ce, pairs200, caplog):
    assert onnx_ce.model.activation == "sigmoid" and onnx_ce.max_length == torch_ce.max_length == 192
    with caplog.at_level(logging.WARNING, logger="twostage_integrations.rerank.onnx"):
        ours = np.array(onnx_ce.score_pairs(pairs200))
    theirs = np.array(torch_ce.score_pairs(pairs200))
    assert np.abs(ours - theirs).max() < 1e-4
    assert ours.std() > 0.1  # real spread of scores, not a constant
    # SciFact abstracts are long: both engines cut the same pairs, and the ONNX engine says so once.
    assert onnx_ce.last_stats.truncated == torch_ce.last_stats.truncated > 0
    assert onnx_ce.last_stats.pairs == 200
    warnings = [r for r in caplog.records if "max_length=192" in r.getMessage()]
    assert len(warnings) == 1 and f"{onnx_ce.last_stats.truncated} of 200" in warnings[0].getMessage()


def test_fp32_scores_equal_torch_identity(rerank_model_path, pairs200):
    ours = CrossEncoderReranker(rerank_model_path, backend="onnx", activation="identity")
    theirs = CrossEncoderReranker(rerank_model_path, backend="torch", activation="identity")
    a, b = np.array(ours.score_pairs(pairs200)), np.array(theirs.score_pairs(pairs200))
    assert (a < 0).any() and (a > 1).any()  # logits, not probabilities
    assert np.abs(a - b).max() < 1e-4


def test_bucketed_batches_return_input_order(onnx_ce, pairs200):
    # Mixed lengths: short made-up texts between the long abstracts, so sorting really reorders the pairs.
    pairs = [p if i % 3 else (p[0], p[1][: 40 + 7 * i]) for i, p in enumerate(pairs200[:40])]
    engine = onnx_ce.model
    batched = engine.predict(pairs)[:, 0]
    assert engine.last_stats.batches == 3 and engine.last_stats.padded_tokens < 40 * 192
    one_by_one = np.array([engine.predict([p])[0, 0] for p in pairs])  # no sorting, no padding
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    perm = np.random.default_rng(0).permutation(len(pairs))
    shuffled = engine.predict([pairs[i] for i in perm])[:, 0]
    np.testing.assert_allclose(shuffled, batched[perm], atol=1e-5)


def test_score_pairs_with_mixed_queries_equals_score(onnx_ce, pairs200):
    pairs = pairs200[:30]
    mixed = pairs[::2] + pairs[1::2]  # queries interleaved
    joint = onnx_ce.score_pairs(mixed)
    by_query: dict[str, list[int]] = {}
    for i, (q, _) in enumerate(mixed):
        by_query.setdefault(q, []).append(i)
    assert len(by_query) == 6
    for q, idx in by_query.items():
        np.testing.assert_allclose(onnx_ce.score(q, [mixed[i][1] for i in idx]), [joint[i] for i in idx], atol=1e-5)


def test_int8_keeps_the_top_document(rerank_model_path, onnx_ce, scifact):
    """50 test claims, each with its relevant abstract and the 4 abstracts that share the most words with it."""
    int8 = CrossEncoderReranker(rerank_model_path, backend="onnx-int8")
    assert int8.model.path.name.endswith("-int8.onnx")
    words = {d: set(re.findall(r"\w{4,}", t.lower())) for d, t in scifact.corpus.items()}
    agree = both = 0
    for qid in list(scifact.queries)[:50]:
        query = scifact.queries[qid]
        relevant = next(iter(scifact.qrels[qid]))
        qw = set(re.findall(r"\w{4,}", query.lower()))
        hard = sorted((d for d in words if d != relevant), key=lambda d: -len(qw & words[d]))[:4]
        texts = [scifact.corpus[d] for d in [relevant, *hard]]
        fp32_first = int(np.argmax(onnx_ce.score(query, texts))) == 0
        int8_first = int(np.argmax(int8.score(query, texts))) == 0
        agree += fp32_first and int8_first
        both += fp32_first
    assert both >= 25  # the hard negatives leave fp32 right on most, not all, queries
    assert agree >= 0.9 * both, (agree, both)


def test_export_is_cached(rerank_model_path, tmp_path, monkeypatch):
    monkeypatch.setenv("TWOSTAGE_CACHE_DIR", str(tmp_path))
    before = len(onnx_engine.EXPORTS)
    first = CrossEncoderReranker(rerank_model_path, backend="onnx").model.path
    assert first.is_relative_to(tmp_path) and len(onnx_engine.EXPORTS) == before + 1
    assert first.with_suffix(".json").is_file()  # manifest: settings and exporter versions
    mtime = first.stat().st_mtime_ns
    second = CrossEncoderReranker(rerank_model_path, backend="onnx").model.path
    assert second == first and first.stat().st_mtime_ns == mtime
    assert len(onnx_engine.EXPORTS) == before + 1
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]  # no half-written file left


def test_onnx_path_does_not_import_torch(rerank_model_path, onnx_ce):
    # onnx_ce has filled the session's export cache; a fresh interpreter must score without torch.
    code = (
        "import sys\n"
        "from twostage_integrations import CrossEncoderReranker\n"
        f"ce = CrossEncoderReranker({rerank_model_path!r}, backend='onnx')\n"
        "print(ce.score('aspirin', ['aspirin lowers the risk of stroke', 'bananas are yellow']))\n"
        "print(sorted(m for m in ('torch', 'sentence_transformers', 'transformers') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=os.environ)
    assert proc.returncode == 0, proc.stderr
    scores_line, modules_line = proc.stdout.strip().splitlines()[-2:]
    assert modules_line == "[]"
    scores = eval(scores_line)  # noqa: S307 - our own printed list
    assert scores[0] > scores[1]
    assert "exporting" not in proc.stderr  # the cache was reused
