"""Multi-stage reranking: a cheap model trims the candidates, a stronger one orders the rest."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..errors import InvalidParameterError
from ..hit import Hit
from ..validation import check_positive_int, check_rerank_args
from .base import Reranker

# Per-stage options of a cross-encoder stage in `eval`/`bench --stage MODEL:KEEP@backend=B,max_length=N`
# (long_docs, window, stride: windowed scoring of long passages, docs/stage2.md "Long documents").
STAGE_OPTIONS = ("backend", "max_length", "long_docs", "window", "stride")


@dataclass
class StageOutput:
    """What one cascade stage did.

    Attributes:
        name: The stage's reranker name.
        n_in: Hits the stage got.
        hits: Hits the stage kept, best first.
        seconds: Wall-clock seconds the stage took.
    """

    name: str
    n_in: int
    hits: list[Hit] = field(repr=False)
    seconds: float

    @property
    def n_out(self) -> int:
        """Hits the stage kept."""
        return len(self.hits)


class Cascade:
    """Rerankers applied in turn, each keeping its own number of hits.

    ``Cascade([(tiny, 30), (ce, 5)])`` reranks the recalled candidates with ``tiny``, keeps 30, reranks those
    with ``ce`` and keeps 5: the "multi-stage" shape, where the expensive model only sees what the cheap one
    let through. A cascade is itself a reranker, so it plugs into :class:`TwoStagePipeline` (which also accepts
    the plain list) and into other cascades. ``top_k`` of :meth:`rerank` cuts the last stage's output further.
    Hits carry the last stage's ``rerank_score``/``rerank_rank``.

    Args:
        stages: ``(reranker, keep)`` pairs in order (``keep=None`` keeps all the stage gets); a bare reranker
            is a stage that keeps all.

    Raises:
        InvalidParameterError: If ``stages`` is empty or not a list, a stage is not a reranker, or a ``keep``
            is below 1.

    >>> from twostage_integrations import CrossEncoderReranker, Hit
    >>> from twostage_integrations.rerank.cascade import Cascade
    >>> ce = CrossEncoderReranker("path/to/cross-encoder")  # doctest: +SKIP
    >>> cascade = Cascade([(ce, 30), (ce, 5)])  # doctest: +SKIP
    >>> [s.n_out for s in cascade.run("query", hits)]  # doctest: +SKIP
    [30, 5]
    """

    score_kind = property(
        lambda self: getattr(self.stages[-1][0], "score_kind", "rerank"),
        doc="The last stage's score kind (its hits carry that stage's scores).",
    )

    def __init__(self, stages: Sequence[tuple[Reranker, int | None] | Reranker]) -> None:
        if isinstance(stages, (str, bytes)) or not isinstance(stages, Sequence) or not stages:
            raise InvalidParameterError("a cascade needs a non-empty list of (reranker, keep) pairs")
        self.stages: list[tuple[Reranker, int | None]] = []
        for i, stage in enumerate(stages):
            reranker, keep = stage if isinstance(stage, tuple) else (stage, None)
            if not callable(getattr(reranker, "rerank", None)):
                raise InvalidParameterError(
                    f"cascade stage {i} is {type(reranker).__name__}, not a reranker (needs rerank/arerank)"
                )
            if keep is not None:
                check_positive_int(keep, f"keep of cascade stage {i}")
            self.stages.append((reranker, keep))
        self.name = " → ".join(
            f"{getattr(r, 'name', type(r).__name__)}" + (f"[{k}]" if k is not None else "") for r, k in self.stages
        )

    def _keep(self, i: int, top_k: int | None) -> int | None:
        keep = self.stages[i][1]
        if i == len(self.stages) - 1 and top_k is not None:
            return top_k if keep is None else min(keep, top_k)
        return keep

    def run(self, query: str, hits: Sequence[Hit], top_k: int | None = None) -> list[StageOutput]:
        """Rerank through every stage and report each one.

        Args:
            query: The query text.
            hits: Stage 1's hits.
            top_k: Cuts the last stage's output further; ``None`` keeps what it keeps.

        Returns:
            Every stage's output in order (the last one is what :meth:`rerank` returns).

        Raises:
            InvalidQueryError: If the query is empty, blank or not a string.
            InvalidParameterError: If ``top_k`` is below 1.
        """
        check_rerank_args(query, top_k)
        outputs: list[StageOutput] = []
        current = list(hits)
        for i, (reranker, _) in enumerate(self.stages):
            t0 = time.perf_counter()
            n_in = len(current)
            current = reranker.rerank(query, current, self._keep(i, top_k))
            outputs.append(StageOutput(reranker.name, n_in, current, time.perf_counter() - t0))
        return outputs

    async def arun(self, query: str, hits: Sequence[Hit], top_k: int | None = None) -> list[StageOutput]:
        """Async :meth:`run`: each stage's ``arerank`` in turn.

        Args:
            query: The query text.
            hits: Stage 1's hits.
            top_k: Cuts the last stage's output further; ``None`` keeps what it keeps.

        Returns:
            Every stage's output in order.
        """
        check_rerank_args(query, top_k)
        outputs: list[StageOutput] = []
        current = list(hits)
        for i, (reranker, _) in enumerate(self.stages):
            t0 = time.perf_counter()
            n_in = len(current)
            current = await reranker.arerank(query, current, self._keep(i, top_k))
            outputs.append(StageOutput(reranker.name, n_in, current, time.perf_counter() - t0))
        return outputs

    def rerank(self, query: str, hits: Sequence[Hit], top_k: int | None = None) -> list[Hit]:
        """Rerank through every stage.

        Args:
            query: The query text.
            hits: Stage 1's hits.
            top_k: Cuts the last stage's output further.

        Returns:
            The last stage's hits, best first.
        """
        return self.run(query, hits, top_k)[-1].hits

    async def arerank(self, query: str, hits: Sequence[Hit], top_k: int | None = None) -> list[Hit]:
        """Async :meth:`rerank`.

        Args:
            query: The query text.
            hits: Stage 1's hits.
            top_k: Cuts the last stage's output further.

        Returns:
            The last stage's hits, best first.
        """
        return (await self.arun(query, hits, top_k))[-1].hits

    def __repr__(self) -> str:
        return f"Cascade({self.name!r})"


def as_cascade(stages: Cascade | Reranker | Sequence[tuple[Reranker, int | None] | Reranker]) -> Cascade:
    """The one way a list of rerank stages becomes a :class:`Cascade` (pipeline, ``evaluate``, ``twostage eval``).

    Args:
        stages: ``(reranker, keep)`` pairs or bare rerankers (keep all), in order; a single reranker (one stage
            that keeps all); or a :class:`Cascade`, returned as is.

    Returns:
        The cascade.

    Raises:
        InvalidParameterError: If the list is empty, a stage is not a reranker, or a ``keep`` is below 1.

    >>> from twostage_integrations.testing import FakeReranker
    >>> as_cascade([(FakeReranker(), 30), FakeReranker()]).stages[1][1] is None
    True
    """
    if isinstance(stages, Cascade):
        return stages
    if isinstance(stages, Sequence) and not isinstance(stages, (str, bytes)):
        return Cascade(list(stages))
    return Cascade([(stages, None)])
