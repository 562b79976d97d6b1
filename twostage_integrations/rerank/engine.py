"""One interface for whatever runs a local cross-encoder: :class:`CrossEncoderEngine`.

Modelled on sentence-transformers' ``CrossEncoder.predict``: one primitive, ``predict(pairs)``, returns one row
of scores per (query, text) pair; ranking is built on top of it
(:class:`~twostage_integrations.rerank.CrossEncoderReranker`). Two engines implement it: torch
(:mod:`~twostage_integrations.rerank.engine_torch`) and ONNX Runtime (:mod:`~twostage_integrations.rerank.onnx`).

Both run on :class:`BatchedEngine`, which tokenises every pair once with a ``tokenizers.Tokenizer`` set up as
transformers' ``truncation="longest_first"``, counts the pairs cut at ``max_length`` from that same tokenisation
(the one place truncation is counted), sorts the pairs by length and runs batches padded only to their own
longest pair (rounded up to an engine's ``pad_multiple``); an engine supplies only the forward pass. Nothing
here imports torch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from tokenizers import Encoding, Tokenizer

# Activations the engines apply to the logits by name (what sentence-transformers' ``activation_fn`` does).
ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "identity": lambda x: x,
    "tanh": np.tanh,
}
# What a model input is made of, in the order transformers' tokenizers name them.
INPUT_NAMES = ("input_ids", "token_type_ids", "attention_mask")


@dataclass
class RerankStats:
    """What one ``predict`` call did: pairs scored, pairs cut at ``max_length``, forward passes, real (unpadded)
    and padded tokens, seconds."""

    pairs: int = 0
    truncated: int = 0
    batches: int = 0
    tokens: int = 0
    padded_tokens: int = 0
    seconds: float = 0.0

    def add(self, other: RerankStats) -> None:
        """Add ``other``'s counts to these (how ``total_stats`` sums the calls).

        Args:
            other: The stats of one more call.
        """
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@runtime_checkable
class CrossEncoderEngine(Protocol):
    """What :class:`~twostage_integrations.rerank.CrossEncoderReranker` needs from the code that runs the model.

    ``predict`` scores (query, text) pairs and returns an array of shape ``(len(pairs), num_labels)`` in input
    order, after the model's activation. ``max_length`` is the token limit per pair; ``last_stats`` holds what the
    last ``predict`` call did (pairs, pairs cut at ``max_length``, tokens, seconds) and ``total_stats`` the same
    summed over every call.
    """

    max_length: int
    last_stats: RerankStats
    total_stats: RerankStats

    def predict(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray: ...


def token_limit(value: object, config: dict[str, object]) -> int:
    """The tokens per pair an engine cuts at: ``value`` (a configured limit), unless it is missing or transformers'
    "no limit" (1e30), then the position embeddings the model has.

    Args:
        value: ``max_seq_length`` / ``model_max_length`` as configured, or None.
        config: The model's ``config.json`` as a dict.

    Returns:
        A positive token count.
    """
    if isinstance(value, (int, float)) and 0 < value < 1e6:
        return int(value)
    positions = config.get("max_position_embeddings") or 512
    positions = int(positions) if isinstance(positions, (int, float)) else 512
    if config.get("model_type") in ("roberta", "xlm-roberta", "camembert"):
        positions -= 2  # position ids start after the padding index
    return positions


def pair_tokenizer(tokenizer: Tokenizer, max_length: int, *, side: str = "right") -> Tokenizer:
    """Set ``tokenizer`` up as transformers' ``tokenizer(queries, texts, truncation="longest_first",
    max_length=max_length)`` encodes pairs: the longer of query and text is trimmed first, no padding.

    Args:
        tokenizer: A ``tokenizers.Tokenizer`` (changed in place: pass a copy to keep the original).
        max_length: Tokens per pair, special tokens included.
        side: ``"right"`` or ``"left"``, the model's ``truncation_side``.

    Returns:
        The same tokenizer.
    """
    tokenizer.enable_truncation(max_length, strategy="longest_first", direction=side)
    tokenizer.no_padding()
    return tokenizer


def encode_pairs(tokenizer: Tokenizer, pairs: Sequence[tuple[str, str]]) -> tuple[list[Encoding], np.ndarray, int]:
    """Tokenise ``pairs`` in one call; the one place the engines count the pairs cut at the tokenizer's limit.

    Args:
        tokenizer: A ``tokenizers.Tokenizer`` set up by :func:`pair_tokenizer`.
        pairs: (query, text) pairs.

    Returns:
        ``(encodings, lengths, truncated)``: a pair was cut when its encoding has overflowing tokens.
    """
    encodings = tokenizer.encode_batch([(q, t) for q, t in pairs])
    lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
    return encodings, lengths, sum(1 for e in encodings if e.overflowing)


class CountedEngine:
    """What every engine keeps beside its scores: the token limit, the batch size, and the stats of its last call
    and of all calls (``last_stats`` / ``total_stats``), recorded by :meth:`_record`.

    Args:
        max_length: The limit pairs are cut at.
        batch_size: Pairs per forward pass.
    """

    def __init__(self, *, max_length: int, batch_size: int) -> None:
        self.max_length = max_length
        self.batch_size = batch_size
        self.last_stats = RerankStats()
        self.total_stats = RerankStats()

    @property
    def max_seq_length(self) -> int:
        """``max_length`` under sentence-transformers' name for it."""
        return self.max_length

    def _record(self, stats: RerankStats, started: float) -> None:
        """Close one ``predict`` call's stats (its time since ``started``) and add them to the totals."""
        stats.seconds = time.perf_counter() - started
        self.last_stats = stats
        self.total_stats.add(stats)


class BatchedEngine(CountedEngine):
    """The ``predict`` loop both engines share; subclasses implement :meth:`_forward`.

    ``predict`` tokenises every pair once, sorts the pairs by token length, runs batches of ``batch_size`` padded
    only to their own longest pair (rounded up to a multiple of :attr:`pad_multiple`, at most ``max_length``),
    and returns the scores in input order.

    Args:
        tokenizer: A ``tokenizers.Tokenizer`` set up by :func:`pair_tokenizer`.
        max_length: The limit the tokenizer truncates at.
        batch_size: Pairs per forward pass.
        input_names: Which of ``input_ids``, ``token_type_ids``, ``attention_mask`` the model takes.
    """

    #: Batch widths are rounded up to a multiple of this (1: each batch's own longest pair). Padding changes no
    #: score (the attention mask hides it); fewer distinct input shapes bound what an engine caches per shape.
    pad_multiple: int = 1

    def __init__(self, tokenizer: Tokenizer, *, max_length: int, batch_size: int, input_names: Sequence[str]) -> None:
        super().__init__(max_length=max_length, batch_size=batch_size)
        self.tokenizer = tokenizer
        self.input_names = [n for n in INPUT_NAMES if n in input_names]

    def predict(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """Score ``pairs``.

        Args:
            pairs: (query, text) pairs.

        Returns:
            Scores after the activation, shape ``(len(pairs), num_labels)``, in input order.
        """
        t0 = time.perf_counter()
        encodings, lengths, truncated = encode_pairs(self.tokenizer, pairs)
        stats = RerankStats(pairs=len(pairs), truncated=truncated, tokens=int(lengths.sum()))
        order = np.argsort(-lengths, kind="stable")  # longest first: similar lengths share a batch
        out: np.ndarray | None = None
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            width = self._width(int(lengths[idx].max()))
            scores = self._forward(self._feed([encodings[i] for i in idx], width))
            if out is None:
                out = np.empty((len(pairs), scores.shape[1]), dtype=np.float32)
            out[idx] = scores
            stats.batches += 1
            stats.padded_tokens += len(idx) * width
        self._record(stats, t0)
        return out if out is not None else np.empty((0, 1), dtype=np.float32)

    def _width(self, longest: int) -> int:
        """The padded width of a batch whose longest pair has ``longest`` tokens."""
        return max(longest, min(self.max_length, -(-longest // self.pad_multiple) * self.pad_multiple))

    def _feed(self, encodings: Sequence[Encoding], width: int) -> dict[str, np.ndarray]:
        """Model inputs for one batch, right-padded with zeros: pads sit after the real tokens and the attention
        mask hides them, so their ids change no score (RoBERTa-style position ids count real tokens only)."""
        feed = {name: np.zeros((len(encodings), width), dtype=np.int64) for name in self.input_names}
        for row, enc in enumerate(encodings):
            n = len(enc.ids)
            feed["input_ids"][row, :n] = enc.ids
            feed["attention_mask"][row, :n] = 1
            if "token_type_ids" in feed:
                feed["token_type_ids"][row, :n] = enc.type_ids
        return feed

    def _forward(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        """Scores after the activation for one padded batch, shape ``(batch, num_labels)``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(max_length={self.max_length}, batch_size={self.batch_size})"
