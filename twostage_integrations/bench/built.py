"""What a built ``twostage bench`` system is: how to search with it and where its counts come from."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..hit import Hit
from ..pipeline import TwoStagePipeline
from ..rerank.cascade import Cascade, StageOutput
from ..rerank.cross_encoder import CrossEncoderReranker


class TimedCascade(Cascade):
    """A :class:`Cascade` that keeps its last run's stage outputs (the per-stage timings of the bench)."""

    last_run: list[StageOutput]

    def rerank(self, query: str, hits: Sequence[Hit], top_k: int | None = None) -> list[Hit]:
        self.last_run = self.run(query, hits, top_k)
        return self.last_run[-1].hits


@dataclass
class BuiltSystem:
    """One system ready to time: ``search`` maps a query to its top-k ids; the rest says where its counts come from."""

    search: Callable[[str], list[str]]  # query -> top-k ids
    pipeline: TwoStagePipeline | None = None  # ours: where the stage split comes from
    rerank_max_length: int | None = None
    reranker: CrossEncoderReranker | None = None  # ours: where pair, truncation and token counts come from
    cascade: TimedCascade | None = None  # twostage-cascade: its stages' rerankers count instead of ``reranker``
    description: str | None = None  # None: SYSTEMS' line
    engine: str | None = None  # what runs its rerank, read from what was built (the preset table's "engine")
    counted: list[CrossEncoderReranker] | None = None  # a spec row: its stages' cross-encoders count

    def engines(self) -> list[CrossEncoderReranker]:
        """Our cross-encoders this system runs, each once (a cascade may use one model in two stages)."""
        if self.counted is not None:
            return list(self.counted)
        if self.cascade is not None:
            unique = {id(r): r for r, _ in self.cascade.stages if isinstance(r, CrossEncoderReranker)}
            return list(unique.values())
        return [self.reranker] if self.reranker is not None else []


def max_length_of(model: Any) -> int | None:
    """The token limit of a loaded cross-encoder (sentence-transformers or our ONNX engine), None if unknown."""
    return getattr(model, "max_seq_length", None) or getattr(model, "max_length", None)


def st_engine_label(model: Any) -> str:
    """What runs a sentence-transformers ``CrossEncoder`` (the native stacks' model), read from it: its backend,
    and for torch the dtype of its weights, e.g. ``ST torch fp32``.

    Args:
        model: A loaded ``sentence_transformers.CrossEncoder``.

    Returns:
        The label.
    """
    backend = getattr(model, "backend", "torch")
    if backend != "torch":
        return f"ST {backend}"
    parameters = getattr(model, "parameters", None)
    first = next(iter(parameters()), None) if callable(parameters) else None
    dtype = str(getattr(first, "dtype", "")).removeprefix("torch.")
    return f"ST torch {DTYPES.get(dtype, dtype)}".rstrip()


DTYPES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}
