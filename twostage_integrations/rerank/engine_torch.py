"""The torch engine: a sentence-transformers ``CrossEncoder``'s transformers model, fed by this package.

:class:`TorchCrossEncoder` tokenises the pairs itself with the model's own fast tokenizer, set up as
sentence-transformers sets it (``truncation="longest_first"`` at ``max_seq_length``), and runs the transformers
model on the padded batches; so it counts the pairs it cuts from the one tokenisation it scores (see
:class:`~twostage_integrations.rerank.engine.BatchedEngine`) and its scores equal ``CrossEncoder.predict``'s
within float rounding (padding differs, nothing else).

Models whose scoring is more than "transformers logits, then the activation" (several sentence-transformers
modules, prompts, chat templates, a slow tokenizer) run through ``CrossEncoder.predict`` itself instead:
:class:`SentenceTransformersEngine`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ModelLoadError
from .engine import BatchedEngine, CountedEngine, RerankStats, encode_pairs, pair_tokenizer, token_limit

# The sentence-transformers module settings :class:`TorchCrossEncoder` reproduces.
_PLAIN_TEXT = {"method": "forward", "method_output_name": "logits"}


def _copy_fast_tokenizer(hf_tokenizer: Any, max_length: int) -> Any:
    """A private ``tokenizers.Tokenizer`` copy of a transformers fast tokenizer, set up for pairs (the original
    stays untouched: transformers resets its truncation on every call)."""
    from tokenizers import Tokenizer

    copy = Tokenizer.from_str(hf_tokenizer.backend_tokenizer.to_str())
    return pair_tokenizer(copy, max_length, side=getattr(hf_tokenizer, "truncation_side", "right"))


def _limit(model: Any) -> int:
    """The cross-encoder's ``max_seq_length``, or its position embeddings when the tokenizer sets no limit."""
    config = getattr(getattr(model, "model", None), "config", None)
    return token_limit(getattr(model, "max_seq_length", None), config.to_dict() if config is not None else {})


def feeds_itself(cross_encoder: Any) -> bool:
    """Whether :class:`TorchCrossEncoder` reproduces ``cross_encoder.predict``: a fast tokenizer, and (in
    sentence-transformers 6, where a cross-encoder is a chain of modules) one plain sequence-classification
    transformer with no prompt and no processing overrides.

    Args:
        cross_encoder: A sentence-transformers ``CrossEncoder``.

    Returns:
        True when the engine can tokenise and run the model itself.
    """
    if not hasattr(getattr(cross_encoder, "tokenizer", None), "backend_tokenizer"):
        return False
    if getattr(cross_encoder, "default_prompt_name", None) is not None:
        return False
    if not (hasattr(cross_encoder, "__len__") and hasattr(cross_encoder, "__getitem__")):
        return True  # sentence-transformers < 6: predict is always tokenizer -> model logits -> activation
    if len(cross_encoder) != 1:
        return False
    module = cross_encoder[0]
    return (
        getattr(module, "transformer_task", "sequence-classification") == "sequence-classification"
        and (getattr(module, "modality_config", None) or {"text": _PLAIN_TEXT}) == {"text": _PLAIN_TEXT}
        and not getattr(module, "processing_kwargs", None)
    )


class TorchCrossEncoder(BatchedEngine):
    """A sentence-transformers ``CrossEncoder`` run batch by batch on its transformers model.

    Implements :class:`~twostage_integrations.rerank.engine.CrossEncoderEngine`. Scores equal
    ``model.predict(pairs)`` within float rounding; use :func:`torch_engine` to pick this or
    :class:`SentenceTransformersEngine` for a given model.

    Args:
        model: A ``CrossEncoder`` (anything with ``model``: a transformers sequence-classification model,
            ``tokenizer``: its fast tokenizer, ``max_seq_length`` and ``activation_fn``).
        batch_size: Pairs per forward pass.

    Raises:
        ModelLoadError: The tokenizer is not a fast one (no ``backend_tokenizer``): use :func:`torch_engine`.
    """

    # Why 16: PyTorch's CPU kernels keep memory per input shape, so batches padded to their own longest pair
    # (up to batch_size x max_length shapes under varied traffic) grew a torch server's RSS for thousands of
    # requests (docs/reliability.md, "Memory under long load"); multiples of 16 leave max_length / 16 widths.
    pad_multiple = 16

    def __init__(self, model: Any, *, batch_size: int = 32) -> None:
        self.model = model
        hf_tokenizer = model.tokenizer
        if not hasattr(hf_tokenizer, "backend_tokenizer"):
            raise ModelLoadError("TorchCrossEncoder needs a fast tokenizer; torch_engine() picks the engine that fits")
        limit = _limit(model)
        names = getattr(hf_tokenizer, "model_input_names", ["input_ids", "attention_mask"])
        super().__init__(
            _copy_fast_tokenizer(hf_tokenizer, limit), max_length=limit, batch_size=batch_size, input_names=names
        )

    def _forward(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        import torch

        transformer = self.model.model
        transformer.eval()  # as CrossEncoder.predict does on every call: no dropout
        inputs = {name: torch.from_numpy(array).to(transformer.device) for name, array in feed.items()}
        with torch.inference_mode():
            scores = transformer(**inputs).logits
            if torch.is_floating_point(scores) and torch.finfo(scores.dtype).bits < 32:
                scores = scores.float()  # half-precision models: break ties as sentence-transformers does
            if self.model.activation_fn is not None:
                scores = self.model.activation_fn(scores)
        return scores.float().cpu().numpy()


class SentenceTransformersEngine(CountedEngine):
    """``CrossEncoder.predict`` itself, for models :class:`TorchCrossEncoder` cannot run (see :func:`feeds_itself`).

    Implements :class:`~twostage_integrations.rerank.engine.CrossEncoderEngine`. sentence-transformers formats and
    tokenises these pairs its own way (prompts, chat templates) and reports no cuts, so the cut pairs are counted
    with :func:`~twostage_integrations.rerank.engine.encode_pairs` on the plain pairs: an estimate and a second
    tokenisation, for these models only (none when the tokenizer is not a fast one: ``truncated`` stays 0).

    Args:
        model: A sentence-transformers ``CrossEncoder``.
        batch_size: Pairs per forward pass.
    """

    def __init__(self, model: Any, *, batch_size: int = 32) -> None:
        super().__init__(max_length=_limit(model), batch_size=batch_size)
        self.model = model
        hf_tokenizer = model.tokenizer
        fast = hasattr(hf_tokenizer, "backend_tokenizer")
        self.tokenizer = _copy_fast_tokenizer(hf_tokenizer, self.max_length) if fast else None

    def predict(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """Score ``pairs`` with ``CrossEncoder.predict``.

        Args:
            pairs: (query, text) pairs.

        Returns:
            Scores after the activation, shape ``(len(pairs), num_labels)``, in input order.
        """
        t0 = time.perf_counter()
        stats = RerankStats(pairs=len(pairs), batches=-(-len(pairs) // self.batch_size))
        if self.tokenizer is not None and pairs:
            _, lengths, stats.truncated = encode_pairs(self.tokenizer, pairs)
            stats.tokens = int(lengths.sum())
        scores = self.model.predict(
            [tuple(p) for p in pairs], batch_size=self.batch_size, show_progress_bar=False, convert_to_numpy=True
        )
        self._record(stats, t0)
        return np.asarray(scores, dtype=np.float32).reshape(len(pairs), -1)


def torch_activation(name: str) -> Any:
    """The torch module for an activation name (``"sigmoid"``, ``"identity"``, else tanh), for
    ``CrossEncoder(activation_fn=...)``.

    Args:
        name: One of :data:`~twostage_integrations.rerank.engine.ACTIVATIONS`.

    Returns:
        A ``torch.nn.Module``.
    """
    import torch

    return {"sigmoid": torch.nn.Sigmoid, "identity": torch.nn.Identity}.get(name, torch.nn.Tanh)()


def torch_engine(model: Any, *, batch_size: int = 32) -> TorchCrossEncoder | SentenceTransformersEngine:
    """The engine for a loaded ``CrossEncoder``: :class:`TorchCrossEncoder` when it can run the model itself
    (:func:`feeds_itself`), else :class:`SentenceTransformersEngine`.

    Args:
        model: A sentence-transformers ``CrossEncoder``.
        batch_size: Pairs per forward pass.

    Returns:
        The engine.
    """
    if feeds_itself(model):
        return TorchCrossEncoder(model, batch_size=batch_size)
    return SentenceTransformersEngine(model, batch_size=batch_size)
