"""--layers: which transformer layers a cheaper cross-encoder keeps (tiny randomly initialised BERT, no weights)."""

from __future__ import annotations

import pytest
import torch

from twostage_integrations.errors import InvalidParameterError
from twostage_integrations.finetune.model import (
    LEAST_USEFUL,
    keep_layers,
    layer_cuts,
    parse_layers,
)


def _tiny_random_bert(n_layers: int = 6):
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=50, hidden_size=8, num_hidden_layers=n_layers, num_attention_heads=2, intermediate_size=16,
        num_labels=1,
    )  # fmt: skip
    return BertForSequenceClassification(config)


def test_indices_keep_exactly_those_modules():
    model = _tiny_random_bert(6)
    originals = list(model.bert.encoder.layer)
    assert keep_layers(model, [0, 5]) == [0, 5]
    assert list(model.bert.encoder.layer) == [originals[0], originals[5]]  # the same modules, weights untouched
    assert model.config.num_hidden_layers == 2
    with torch.no_grad():  # still a working model of the new depth
        logits = model(input_ids=torch.tensor([[1, 2, 3]])).logits
    assert logits.shape == (1, 1)


@pytest.mark.parametrize(("count", "kept"), [(1, [0]), (2, [0, 1]), (6, [0, 1, 2, 3, 4, 5])])
def test_counts(count, kept):
    assert keep_layers(_tiny_random_bert(6), count) == kept


def test_a_count_keeps_the_first_layers():
    model = _tiny_random_bert(6)
    originals = list(model.bert.encoder.layer)
    assert keep_layers(model, 2) == [0, 1]
    assert list(model.bert.encoder.layer) == originals[:2]


@pytest.mark.parametrize("bad", [7, 0, [1, 0], [0, 0], [0, 6], [-1, 2], []])
def test_bad_layers_are_refused(bad):
    with pytest.raises(InvalidParameterError, match="layers"):
        keep_layers(_tiny_random_bert(6), bad)


def test_parse_layers():
    assert parse_layers("2") == 2
    assert parse_layers("0, 5") == [0, 5]
    with pytest.raises(InvalidParameterError, match="count"):
        parse_layers("two")


def test_a_plain_encoder_is_cut_at_once():
    assert layer_cuts(2, 6, gradual=False) == [2]
    assert layer_cuts([0, 5], 6, gradual=False) == [[0, 5]]


def test_a_cross_encoder_loses_listed_layers_one_at_a_time_highest_first():
    # Each cut indexes the previous round's stack: 6 -> drop 4 -> drop 3 -> drop 2 -> drop 1 = [0, 5].
    assert layer_cuts([0, 5], 6, gradual=True) == [[0, 1, 2, 3, 5], [0, 1, 2, 4], [0, 1, 3], [0, 2]]
    stack = list(range(6))
    for cut in layer_cuts([0, 5], 6, gradual=True):
        stack = [stack[i] for i in cut]
    assert stack == [0, 5]
    assert layer_cuts(2, 6, gradual=True) == [LEAST_USEFUL] * 4
    assert layer_cuts(6, 6, gradual=True) == []


def test_layer_cuts_refuse_what_keep_layers_refuses():
    with pytest.raises(InvalidParameterError, match="layers"):
        layer_cuts([0, 6], 6, gradual=True)
