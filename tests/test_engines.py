"""Both cross-encoder engines on the real model (TWOSTAGE_RERANK_MODEL) and real SciFact pairs: one interface, the
same truncation counts, one tokenisation per call, torch scores unchanged against sentence-transformers' predict.
"""

from __future__ import annotations

import logging
import random

import numpy as np
import pytest

from twostage_integrations.evaluation.beir import load_beir
from twostage_integrations.rerank.cross_encoder import CrossEncoderReranker
from twostage_integrations.rerank.engine import CrossEncoderEngine
from twostage_integrations.rerank.engine_torch import TorchCrossEncoder

SHORT = 96  # a limit that cuts most SciFact pairs, so truncation is exercised on both sides of each pair


@pytest.fixture(scope="module")
def pairs(scifact_dir):
    """40 (claim, abstract) pairs: 20 test claims with one relevant and one seeded random abstract, plus short
    texts, so some pairs fit and some are cut."""
    data = load_beir(scifact_dir, "test")
    rng, docs, out = random.Random(11), sorted(data.corpus), []
    for qid in list(data.queries)[:20]:
        relevant = next(iter(data.qrels[qid]))
        out += [(data.queries[qid], data.corpus[relevant]), (data.queries[qid], data.corpus[rng.choice(docs)][:150])]
    return out


@pytest.fixture(scope="module")
def engines(rerank_model_path):
    return {
        backend: CrossEncoderReranker(rerank_model_path, backend=backend, max_length=SHORT)
        for backend in ("torch", "onnx")
    }


class CountingTokenizer:
    """Wraps a ``tokenizers.Tokenizer`` and counts the calls that tokenise."""

    def __init__(self, inner) -> None:
        self.inner, self.calls = inner, []

    def encode_batch(self, *args, **kwargs):
        self.calls.append("encode_batch")
        return self.inner.encode_batch(*args, **kwargs)

    def encode(self, *args, **kwargs):
        self.calls.append("encode")
        return self.inner.encode(*args, **kwargs)


def test_both_engines_implement_the_protocol(engines):
    pytest.importorskip("onnxruntime")
    assert isinstance(engines["torch"].engine, TorchCrossEncoder)  # the real model is fed by our own loop
    for reranker in engines.values():
        assert isinstance(reranker.engine, CrossEncoderEngine)
        assert reranker.engine.max_length == reranker.max_length == SHORT


def test_same_truncation_counts_on_the_same_pairs(engines, pairs, rerank_model_path):
    pytest.importorskip("onnxruntime")
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(rerank_model_path)(
        [q for q, _ in pairs], [t for _, t in pairs], truncation=False
    )["input_ids"]
    expected = sum(len(x) > SHORT for x in ids)  # an independent count: the untruncated lengths
    assert 0 < expected < len(pairs)
    for reranker in engines.values():
        reranker.score_pairs(pairs)
        assert reranker.last_stats.truncated == expected and reranker.last_stats.pairs == len(pairs)
    assert engines["torch"].last_stats.tokens == engines["onnx"].last_stats.tokens


def test_the_tokenizer_runs_once_per_call(engines, pairs, monkeypatch):
    pytest.importorskip("onnxruntime")
    for reranker in engines.values():
        counting = CountingTokenizer(reranker.engine.tokenizer)
        monkeypatch.setattr(reranker.engine, "tokenizer", counting)
        reranker.score_pairs(pairs)
        assert counting.calls == ["encode_batch"]
        assert reranker.last_stats.batches > 1  # one tokenisation for several forward passes


def test_torch_scores_equal_sentence_transformers_predict(engines, pairs, rerank_model_path):
    ours = np.array(engines["torch"].score_pairs(pairs))
    theirs = engines["torch"].model.predict(pairs, batch_size=32, show_progress_bar=False)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    assert ours.std() > 0.1
    full = CrossEncoderReranker(rerank_model_path, backend="torch")  # the model's own limit, 192 tokens
    np.testing.assert_allclose(full.score_pairs(pairs), full.model.predict(pairs, show_progress_bar=False), atol=1e-5)


def test_torch_engine_warns_about_cut_pairs(rerank_model_path, pairs, caplog):
    # conftest's fresh_truncation_warnings: nothing was said for this model and limit yet
    reranker = CrossEncoderReranker(rerank_model_path, backend="torch", max_length=SHORT)
    with caplog.at_level(logging.WARNING):
        reranker.score_pairs(pairs)
    cut = reranker.last_stats.truncated
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and f"max_length={SHORT}" in r.getMessage()]
    assert cut > 0 and len(warnings) == 1
    assert f"{cut} of {len(pairs)} (query, text) pairs" in warnings[0].getMessage()
