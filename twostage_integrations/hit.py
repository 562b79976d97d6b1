"""The one result type every stage returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Hit:
    """One retrieved passage and how each stage scored it.

    Every score follows "higher is better":

    - ``recall_score``: the stage-1 score. Cosine similarity (-1..1) for Chroma recall.
    - ``rerank_score``: the stage-2 score, ``None`` when no reranker ran. For a cross-encoder it is the
      model's output after the model's own activation (a probability for sigmoid heads, a logit
      otherwise); for Cohere it is ``relevance_score`` (0..1).
    - ``score``: the score of the last stage that ran; what callers should sort and threshold on.

    Ranks are 1-based positions in that stage's output.

    Attributes:
        id: The passage id in stage 1's store.
        text: The passage text.
        metadata: The metadata stored with the passage.
        score: The final score (see above).
        recall_score: Stage 1's score.
        recall_rank: 1-based rank in stage 1's output.
        rerank_score: Stage 2's score, ``None`` when no reranker ran.
        rerank_rank: 1-based rank in stage 2's output, ``None`` when no reranker ran.

    >>> Hit(id="a", text="Aspirin thins the blood.", score=0.8, recall_score=0.8, recall_rank=1)
    Hit(id='a', text='Aspirin thins the blood.', metadata={}, score=0.8, recall_score=0.8, ...)
    """

    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    score: float = 0.0
    recall_score: float = 0.0
    recall_rank: int = 0
    rerank_score: float | None = None
    rerank_rank: int | None = None

    def __repr__(self) -> str:  # keep reprs short in notebooks and doctests
        return (
            f"Hit(id={self.id!r}, text={self.text[:60]!r}, metadata={self.metadata!r}, score={self.score!r}, "
            f"recall_score={self.recall_score!r}, ...)"
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what ``twostage query --json`` prints).

        Returns:
            Every field by name; ``metadata`` is a copy.
        """
        return {
            "id": self.id,
            "text": self.text,
            "metadata": dict(self.metadata),
            "score": self.score,
            "recall_score": self.recall_score,
            "recall_rank": self.recall_rank,
            "rerank_score": self.rerank_score,
            "rerank_rank": self.rerank_rank,
        }
