"""Fine-tune the stage-2 cross-encoder on your own data (``twostage finetune``).

>>> from twostage_integrations.finetune import finetune
>>> result = finetune("path/to/beir-folder", base="path/to/encoder", out="my-reranker")  # doctest: +SKIP
>>> print(result.metrics["after"]["nDCG@10"])  # doctest: +SKIP

The same with a :class:`FinetuneConfig` (checked on creation, reusable, one place for every setting):

>>> from twostage_integrations.finetune import FinetuneConfig
>>> config = FinetuneConfig(base="path/to/encoder", out="my-reranker", layers=2)  # doctest: +SKIP
>>> result = finetune("path/to/beir-folder", config=config)  # doctest: +SKIP
"""

from .config import FinetuneConfig
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
    "FinetuneConfig",
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
