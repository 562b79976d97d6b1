"""Long documents scored in windows (rerank/windows.py) on a tiny randomly initialised BERT and an in-memory
WordPiece tokenizer (no weights): offsets, coverage, fit, short passages unchanged, evidence through the adapters,
and bad settings. The real model on SciFact: tests/test_long_docs_eval.py."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch

from twostage_integrations import Hit
from twostage_integrations.errors import InvalidParameterError
from twostage_integrations.rerank import cross_encoder, engine_torch
from twostage_integrations.rerank.cross_encoder import CrossEncoderReranker
from twostage_integrations.rerank.windows import WindowSplitter, aggregate, check_long_docs, evidence_context

MAX_LENGTH = 24
WORDS = ["aspirin", "lowers", "the", "risk", "of", "stroke", "bananas", "are", "yellow", "cells", "divide", "in"]
WORDS += ["tissue", "a", "protein", "binds", "to", "dna", "un", "##believ", "##able", "##s", ".", ",", "é"]


def _tokenizer():
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *WORDS])}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return tok, vocab


def _tiny_random_cross_encoder() -> SimpleNamespace:
    """A stand-in for sentence-transformers' CrossEncoder: a tiny randomly initialised BERT, fast tokenizer."""
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    backend, vocab = _tokenizer()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]"
    )
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
        max_position_embeddings=64, num_labels=1,
    )  # fmt: skip
    model = BertForSequenceClassification(config).eval()
    return SimpleNamespace(
        model=model, tokenizer=tokenizer, max_seq_length=MAX_LENGTH, activation_fn=torch.nn.Sigmoid()
    )


def _random_text(rng: random.Random, n_words: int) -> str:
    pieces = ["aspirin", "lowers", "risk", "unbelievables", "Élan", "bananas", "DNA,", "cells.", "  ", "\n", "é"]
    return rng.choice(["", " ", "\t"]) + " ".join(rng.choice(pieces) for _ in range(n_words)) + rng.choice(["", " "])


def _reranker(monkeypatch, **kwargs) -> CrossEncoderReranker:
    ce = _tiny_random_cross_encoder()
    monkeypatch.setattr(cross_encoder, "_load_torch", lambda name, **kw: engine_torch.torch_engine(ce, batch_size=4))
    return CrossEncoderReranker("tiny-random-bert", backend="torch", **kwargs)


QUERY = "aspirin stroke risk"


@pytest.mark.parametrize("seed", range(30))
def test_windows_map_back_cover_and_fit(seed):
    tok, _ = _tokenizer()
    rng = random.Random(seed)
    splitter = WindowSplitter(tok, MAX_LENGTH, stride=rng.choice([None, 1, 3, 7]))
    text = _random_text(rng, rng.randint(0, 60))
    (spans,) = splitter.split(QUERY, [text])
    window, stride = splitter.budget(QUERY)
    covered = [False] * len(text)
    for start, end in spans:
        assert 0 <= start < end <= len(text) or (start, end) == (0, len(text))
        for i in range(start, end):
            covered[i] = True
        pair = tok.encode(QUERY, text[start:end])  # the engine's tokenizer with no truncation: nothing is cut
        assert len(pair.ids) <= MAX_LENGTH
    assert all(covered)  # every character of the passage is in some window
    assert spans == sorted(spans) and all(
        b[0] < a[1] for a, b in zip(spans, spans[1:], strict=False)
    )  # ordered, no gaps
    full = tok.encode(text, add_special_tokens=False)
    if len(full.ids) <= window:
        assert spans == [(0, len(text))]
    else:  # tokens of neighbours overlap by at most window - stride (plus a word moved back whole)
        for (_, a1), (b0, _) in zip(spans, spans[1:], strict=False):
            shared = [i for i, (s, e) in enumerate(full.offsets) if s >= b0 and e <= a1]
            assert len(shared) <= window - stride + 3


def test_window_text_tokenises_as_inside_the_passage():
    tok, _ = _tokenizer()
    text = " ".join(["unbelievables aspirin lowers the risk"] * 12)
    (spans,) = WindowSplitter(tok, MAX_LENGTH).split(QUERY, [text])
    assert len(spans) > 2
    full = tok.encode(text, add_special_tokens=False)
    for start, end in spans:
        inside = [t for t, (s, e) in zip(full.tokens, full.offsets, strict=True) if s >= start and e <= end]
        assert tok.encode(text[start:end], add_special_tokens=False).tokens == inside


def test_limit_reads_only_the_first_tokens():
    tok, _ = _tokenizer()
    text = " ".join(["aspirin lowers the risk of stroke"] * 10)
    (spans,) = WindowSplitter(tok, MAX_LENGTH).split(QUERY, [text], limit=8)
    assert spans == [(0, len(" ".join(["aspirin lowers the risk of stroke", "aspirin lowers"])))]


def test_short_passages_score_exactly_as_first(monkeypatch):
    first = _reranker(monkeypatch)
    texts = ["aspirin lowers the risk of stroke", "bananas are yellow", "cells divide"]
    for how in ("max", "top2mean"):
        windowed = _reranker(monkeypatch, long_docs=how)
        assert windowed.score(QUERY, texts) == first.score(QUERY, texts)
        hits = windowed.rerank(QUERY, [Hit(id=str(i), text=t) for i, t in enumerate(texts)])
        for h in hits:
            assert h.metadata["evidence"] == {"start": 0, "end": len(h.text), "score": h.rerank_score}


def test_long_passage_scores_every_window(monkeypatch):
    text = "bananas are yellow . " * 8 + "aspirin lowers the risk of stroke ." + " cells divide in tissue ." * 8
    first = _reranker(monkeypatch)
    windowed = _reranker(monkeypatch, long_docs="max")
    (spans,) = windowed.splitter.split(QUERY, [text])
    window_scores = first.score(QUERY, [text[s:e] for s, e in spans])
    (hit,) = windowed.rerank(QUERY, [Hit(id="a", text=text, metadata={"source": "x"})])
    assert len(spans) > 2 and windowed.last_stats.pairs == len(spans)
    assert hit.rerank_score == pytest.approx(max(window_scores), abs=1e-6)
    ev = hit.metadata["evidence"]
    assert (ev["start"], ev["end"]) == spans[window_scores.index(max(window_scores))]
    assert hit.metadata["source"] == "x"
    top2 = _reranker(monkeypatch, long_docs="top2mean").rerank(QUERY, [Hit(id="a", text=text)])[0]
    assert top2.rerank_score == pytest.approx(sum(sorted(window_scores)[-2:]) / 2, abs=1e-6)


def test_aggregate_and_evidence_context():
    score, ev = aggregate([0.1, 0.8, 0.8], [(0, 5), (3, 9), (6, 12)], "max")
    assert (score, ev.start, ev.end) == (0.8, 3, 9)  # ties: the earliest window
    hits = [Hit(id="a", text="0123456789", metadata={"evidence": {"start": 2, "end": 5, "score": 1.0}})]
    hits.append(Hit(id="b", text="aspirin"))
    tok, _ = _tokenizer()
    assert evidence_context(hits, tok) == (["234", "aspirin"], 2)
    assert evidence_context(hits) == (["234", "aspirin"], None)


@pytest.mark.parametrize(
    ("long_docs", "window", "stride", "words"),
    [
        ("sliding", None, None, "long_docs must be one of"),
        ("max", 24, None, "leaves no room for the query"),
        ("max", 30, None, "leaves no room"),
        ("max", None, 0, "stride must be a whole number"),
        ("max", None, -3, "stride must be"),
        ("max", 0, None, "window must be"),
        ("max", 8, 9, "longer than window"),
        ("first", 8, None, "apply to long_docs='max'"),
    ],
)
def test_bad_settings_are_one_line_typed_errors(long_docs, window, stride, words):
    with pytest.raises(InvalidParameterError, match=words) as info:
        check_long_docs(long_docs, window, stride, MAX_LENGTH)
    assert "\n" not in str(info.value)


def test_bad_window_refused_against_the_model_limit(monkeypatch):
    with pytest.raises(InvalidParameterError, match="leaves no room"):
        _reranker(monkeypatch, long_docs="max", window=MAX_LENGTH)


def _calibration(long_docs: str):
    """A Platt map fitted on synthetic over-confident scores, stamped as fitted with ``long_docs``."""
    import numpy as np

    from twostage_integrations.rerank.calibration import fit_calibration

    rng = np.random.default_rng(3)
    logit = rng.normal(0.0, 2.5, 2000)
    labels = (rng.random(2000) < 1 / (1 + np.exp(-(2 * logit - 3)))).astype(int)
    cal = fit_calibration(1 / (1 + np.exp(-logit)), labels, method="platt", use_sklearn=False)
    cal.fitted_on = {"long_docs": long_docs}
    return cal


def test_windowed_calibration_maps_the_aggregate_and_each_window(monkeypatch, caplog):
    """A calibration fitted on top2mean scores maps the mean of the raw best two (not the mean of two mapped
    windows), and the evidence window's own score goes through the same map."""
    import numpy as np

    text = "bananas are yellow . " * 8 + "aspirin lowers the risk of stroke ." + " cells divide in tissue ." * 8
    raw = _reranker(monkeypatch, long_docs="top2mean", calibration=False)
    cal = _calibration("top2mean")
    with caplog.at_level("WARNING"):
        mapped = _reranker(monkeypatch, long_docs="top2mean", calibration=cal)
    assert mapped.score_kind == "ce_calibrated" and not caplog.records
    ((raw_score, raw_ev),) = raw.score_pairs_with_evidence([(QUERY, text)])
    ((score, ev),) = mapped.score_pairs_with_evidence([(QUERY, text)])
    expect = cal.apply(np.array([raw_score, raw_ev.score], dtype=np.float32))
    assert score == pytest.approx(float(expect[0]), abs=1e-6) and ev.score == pytest.approx(float(expect[1]), abs=1e-6)
    assert (ev.start, ev.end) == (raw_ev.start, raw_ev.end)
    assert mapped.score(QUERY, [text]) == [score]


def test_a_calibration_fitted_with_other_long_docs_warns(monkeypatch, caplog):
    with caplog.at_level("WARNING"):
        _reranker(monkeypatch, long_docs="max", calibration=_calibration("first"))
    (record,) = [r for r in caplog.records if "long_docs" in r.getMessage()]
    assert "fitted on long_docs='first'" in record.getMessage() and "--long-docs max" in record.getMessage()
