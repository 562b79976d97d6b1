"""Fine-tune the stage-2 cross-encoder on your own data (``twostage finetune``).

>>> from twostage_integrations.finetune import finetune
>>> result = finetune("path/to/beir-folder", base="path/to/encoder", out="my-reranker")  # doctest: +SKIP
>>> print(result.metrics["after"]["nDCG@10"])  # doctest: +SKIP
"""

from .data import (
    PAIR_SOURCES,
    Pair,
    PairBuilder,
    TrainQuery,
    load_corpus,
    mine_negatives,
    split_first_sentence,
    split_last_sentence,
)
from .model import is_cross_encoder, keep_layers, load_base, reset_pooler
from .train import FinetuneResult, finetune

__all__ = [
    "PAIR_SOURCES",
    "FinetuneResult",
    "Pair",
    "PairBuilder",
    "TrainQuery",
    "finetune",
    "is_cross_encoder",
    "keep_layers",
    "load_base",
    "load_corpus",
    "mine_negatives",
    "reset_pooler",
    "split_first_sentence",
    "split_last_sentence",
]
