"""The cross-encoder engine interface, on a tiny randomly initialised BERT and an in-memory tokenizer (no weights).

The real model's scores, truncation counts and warning for both backends are checked in tests/test_engines.py.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from twostage_integrations.errors import ModelLoadError
from twostage_integrations.rerank import cross_encoder, engine_torch, onnx_export
from twostage_integrations.rerank.cross_encoder import CrossEncoderReranker
from twostage_integrations.rerank.engine import BatchedEngine, CrossEncoderEngine, encode_pairs
from twostage_integrations.rerank.engine_torch import SentenceTransformersEngine, TorchCrossEncoder, feeds_itself

MAX_LENGTH = 16
WORDS = ["aspirin", "lowers", "the", "risk", "of", "stroke", "bananas", "are", "yellow", "cells", "divide", "in"]
WORDS += ["tissue", "a", "protein", "binds", "to", "dna"]
PAIRS = [
    ("aspirin risk", "aspirin lowers the risk of stroke"),  # 11 tokens: fits
    ("bananas", "bananas are yellow " * 6),  # cut
    ("cells divide", "cells divide in tissue"),  # fits
    ("a protein binds to dna in cells " * 3, "dna"),  # cut, the query is the long side
    ("stroke", "the risk of stroke " * 5),  # cut
    ("yellow", "bananas"),  # fits
]


def _tiny_random_cross_encoder(*, seed: int = 0) -> SimpleNamespace:
    """A stand-in for sentence-transformers' CrossEncoder: a tiny randomly initialised BERT with a fast tokenizer."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *WORDS])}
    backend = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]"
    )
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
        max_position_embeddings=64, num_labels=1,
    )  # fmt: skip
    model = BertForSequenceClassification(config).eval()
    sigmoid = torch.nn.Sigmoid()
    return SimpleNamespace(model=model, tokenizer=tokenizer, max_seq_length=MAX_LENGTH, activation_fn=sigmoid)


def _reference_scores(ce: SimpleNamespace, pairs) -> np.ndarray:
    """sentence-transformers' recipe in one padded batch: tokenizer(q, t, longest_first) -> logits -> activation."""
    features = ce.tokenizer(
        [q for q, _ in pairs], [t for _, t in pairs], padding=True, truncation="longest_first",
        max_length=ce.max_seq_length, return_tensors="pt",
    )  # fmt: skip
    with torch.no_grad():
        return ce.activation_fn(ce.model(**features).logits).numpy()


def _reference_cut(ce: SimpleNamespace, pairs) -> int:
    """Pairs longer than the limit, from a separate untruncated tokenisation (what the old torch path did)."""
    ids = ce.tokenizer([q for q, _ in pairs], [t for _, t in pairs], truncation=False)["input_ids"]
    return sum(len(x) > ce.max_seq_length for x in ids)


class CountingTokenizer:
    """Wraps a tokenizer and counts every call that tokenises."""

    def __init__(self, inner) -> None:
        self.inner, self.calls = inner, []

    def __getattr__(self, name):
        attr = getattr(self.inner, name)
        if name in ("encode", "encode_batch", "__call__", "encode_plus", "batch_encode_plus"):
            return lambda *a, **kw: self.calls.append(name) or attr(*a, **kw)
        return attr

    def __call__(self, *args, **kwargs):
        self.calls.append("__call__")
        return self.inner(*args, **kwargs)


@pytest.fixture
def tiny_random_ce():
    return _tiny_random_cross_encoder()


def test_torch_engine_implements_the_protocol_and_matches_the_reference(tiny_random_ce):
    engine = TorchCrossEncoder(tiny_random_ce, batch_size=4)
    assert isinstance(engine, CrossEncoderEngine) and engine.max_length == engine.max_seq_length == MAX_LENGTH
    scores = engine.predict(PAIRS)
    assert scores.shape == (len(PAIRS), 1)
    # length-sorted batches of 4 and 2, padded per batch, back in input order: same as one batch in input order
    np.testing.assert_allclose(scores, _reference_scores(tiny_random_ce, PAIRS), atol=1e-6)
    assert np.ptp(scores) > 0  # the random model still tells the pairs apart
    assert engine.last_stats.batches == 2 and engine.last_stats.pairs == len(PAIRS)


def test_truncation_is_counted_from_the_scored_tokenisation(tiny_random_ce):
    engine = TorchCrossEncoder(tiny_random_ce, batch_size=4)
    engine.predict(PAIRS)
    expected = _reference_cut(tiny_random_ce, PAIRS)
    assert expected == 3  # the fixture's own claim: three pairs are too long
    assert engine.last_stats.truncated == expected
    assert engine.last_stats.tokens <= engine.last_stats.padded_tokens <= len(PAIRS) * MAX_LENGTH
    engine.predict(PAIRS[:1])
    assert engine.last_stats.truncated == 0 and engine.total_stats.truncated == expected
    assert engine.total_stats.pairs == len(PAIRS) + 1


def test_the_tokenizer_runs_once_per_predict(tiny_random_ce):
    engine = TorchCrossEncoder(tiny_random_ce, batch_size=2)  # three forward passes
    engine.tokenizer = counting = CountingTokenizer(engine.tokenizer)
    tiny_random_ce.tokenizer = model_tokenizer = CountingTokenizer(tiny_random_ce.tokenizer)
    engine.predict(PAIRS)
    assert counting.calls == ["encode_batch"] and engine.last_stats.batches == 3
    assert model_tokenizer.calls == []  # no second pass through the model's tokenizer to count cuts


def test_the_engine_leaves_the_model_tokenizer_alone(tiny_random_ce):
    TorchCrossEncoder(tiny_random_ce).predict(PAIRS)
    assert tiny_random_ce.tokenizer.backend_tokenizer.truncation is None  # it set up its own copy


def test_no_limit_tokenizer_falls_back_to_the_position_embeddings(tiny_random_ce):
    tiny_random_ce.max_seq_length = int(1e30)  # transformers' "no limit"
    engine = TorchCrossEncoder(tiny_random_ce)
    assert engine.max_length == tiny_random_ce.model.config.max_position_embeddings == 64
    long_pair = ("aspirin", "the risk of stroke " * 40)
    assert engine.predict([long_pair]).shape == (1, 1) and engine.last_stats.truncated == 1


def test_batched_engine_runs_any_forward(tiny_random_ce):
    class LengthEngine(BatchedEngine):
        """Scores a pair by its real token count: shows which rows the loop fed, and in which order."""

        def _forward(self, feed):
            return feed["attention_mask"].sum(axis=1, keepdims=True).astype(np.float32)

    tokenizer = TorchCrossEncoder(tiny_random_ce).tokenizer
    engine = LengthEngine(tokenizer, max_length=MAX_LENGTH, batch_size=4, input_names=["input_ids", "attention_mask"])
    assert isinstance(engine, CrossEncoderEngine)
    _, lengths, truncated = encode_pairs(tokenizer, PAIRS)
    np.testing.assert_array_equal(engine.predict(PAIRS)[:, 0], lengths)
    assert engine.last_stats.truncated == truncated == 3 and lengths.max() == MAX_LENGTH
    assert engine.predict([]).shape == (0, 1) and engine.last_stats.pairs == 0


def test_fallback_engine_scores_with_predict_and_counts_once(tiny_random_ce):
    calls = []

    def predict(pairs, **kwargs):
        calls.append(kwargs["batch_size"])
        return np.arange(len(pairs), dtype=np.float32)

    tiny_random_ce.predict = predict
    engine = SentenceTransformersEngine(tiny_random_ce, batch_size=4)
    assert isinstance(engine, CrossEncoderEngine)
    np.testing.assert_array_equal(engine.predict(PAIRS)[:, 0], np.arange(len(PAIRS)))
    assert calls == [4] and engine.last_stats.truncated == _reference_cut(tiny_random_ce, PAIRS)


class _Modules(list):
    """sentence-transformers 6 shape: a cross-encoder is a chain of modules with a tokenizer."""

    tokenizer = SimpleNamespace(backend_tokenizer=object())
    default_prompt_name = None


def _module(**overrides):
    plain = {"transformer_task": "sequence-classification", "processing_kwargs": {}}
    plain["modality_config"] = {"text": {"method": "forward", "method_output_name": "logits"}}
    return SimpleNamespace(**(plain | overrides))


def test_which_models_the_torch_engine_feeds_itself(tiny_random_ce):
    assert feeds_itself(tiny_random_ce)  # sentence-transformers < 6: tokenizer -> logits -> activation
    assert feeds_itself(_Modules([_module()]))
    assert not feeds_itself(_Modules([_module(), _module()]))  # e.g. a Dense head after the transformer
    assert not feeds_itself(_Modules([_module(transformer_task="text-generation")]))
    assert not feeds_itself(_Modules([_module(modality_config={"message": {}})]))  # chat template
    assert not feeds_itself(_Modules([_module(processing_kwargs={"text": {"max_length": 8}})]))
    prompted = _Modules([_module()])
    prompted.default_prompt_name = "query"
    assert not feeds_itself(prompted)
    slow = SimpleNamespace(tokenizer=object(), default_prompt_name=None)
    assert not feeds_itself(slow)
    with pytest.raises(ModelLoadError, match="fast tokenizer"):
        TorchCrossEncoder(SimpleNamespace(tokenizer=object(), max_seq_length=8))


def test_reranker_warns_once_per_model_and_limit(tiny_random_ce, monkeypatch, caplog):
    monkeypatch.setattr(
        cross_encoder, "_load_torch", lambda name, **kw: engine_torch.torch_engine(tiny_random_ce, batch_size=32)
    )
    first, second = (CrossEncoderReranker("tiny-random-bert", backend="torch") for _ in range(2))
    with caplog.at_level(logging.DEBUG, logger=cross_encoder.__name__):
        first.score_pairs(PAIRS)
        second.score_pairs(PAIRS)  # same model, same limit: already said
        first.score_pairs(PAIRS[:1])  # nothing cut
    records = [r for r in caplog.records if r.name == cross_encoder.__name__]
    assert [r.levelno for r in records] == [logging.WARNING, logging.DEBUG]
    assert f"3 of {len(PAIRS)} (query, text) pairs" in records[0].getMessage()
    assert f"max_length={MAX_LENGTH}" in records[0].getMessage()
    assert first.last_stats.truncated == 0 and first.total_stats.truncated == 3


def test_export_line_is_logged_not_printed(tmp_path, caplog, capfd):
    target = tmp_path / "model.onnx"
    with caplog.at_level(logging.INFO, logger=onnx_export.__name__):
        onnx_export._build(target, lambda tmp: tmp.write_bytes(b"graph") and tmp, "exporting tiny to ONNX", {"v": 1})
    assert target.read_bytes() == b"graph" and target.with_suffix(".json").is_file()
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, f"twostage: exporting tiny to ONNX (once; cached at {target})")
    ]
    assert capfd.readouterr().err == ""


def test_export_line_still_reaches_stderr_without_logging_setup(tmp_path):
    # What the CLI sees without --verbose: no handler configured, logging's last resort prints warnings.
    code = (
        "import sys; from pathlib import Path\n"
        "from twostage_integrations.rerank.onnx_export import _build\n"
        "t = Path(sys.argv[1]) / 'm.onnx'\n"
        "_build(t, lambda tmp: tmp.write_bytes(b'x') and tmp, 'exporting m to ONNX', {})\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == f"twostage: exporting m to ONNX (once; cached at {tmp_path / 'm.onnx'})\n"


def test_torch_batches_are_padded_to_few_widths_and_score_the_same(tiny_random_ce):
    engine = TorchCrossEncoder(tiny_random_ce, batch_size=2)
    assert engine.pad_multiple == 16  # torch keeps memory per input shape: few widths bound it
    engine.pad_multiple = 5  # the tiny fixture's max_length is 16: a smaller multiple shows the rounding
    widths, forward = [], engine._forward
    engine._forward = lambda feed: widths.append(feed["input_ids"].shape[1]) or forward(feed)
    scores = engine.predict(PAIRS)
    longest = sorted((len(e.ids) for e in engine.tokenizer.encode_batch(PAIRS)), reverse=True)[::2]
    assert widths == [min(MAX_LENGTH, -(-n // 5) * 5) for n in longest] and widths != longest
    np.testing.assert_allclose(scores, _reference_scores(tiny_random_ce, PAIRS), atol=1e-6)
    assert engine.last_stats.padded_tokens == 2 * sum(widths)
