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

    def engines(self) -> list[CrossEncoderReranker]:
        """Our cross-encoders this system runs, each once (a cascade may use one model in two stages)."""
        if self.cascade is not None:
            unique = {id(r): r for r, _ in self.cascade.stages if isinstance(r, CrossEncoderReranker)}
            return list(unique.values())
        return [self.reranker] if self.reranker is not None else []


def max_length_of(model: Any) -> int | None:
    """The token limit of a loaded cross-encoder (sentence-transformers or our ONNX engine), None if unknown."""
    return getattr(model, "max_seq_length", None) or getattr(model, "max_length", None)
