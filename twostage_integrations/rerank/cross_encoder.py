"""Stage 2 with a local sentence-transformers cross-encoder."""

from __future__ import annotations

import os
from collections.abc import Sequence

from ..models import RERANK_MODEL_ENV, load_model, resolve_rerank_model
from ..scores import cross_encoder_score_kind
from .base import BaseReranker

NO_MODEL_HINT = ", pass --rerank-model PATH, or skip stage 2 with --no-rerank"


class CrossEncoderReranker(BaseReranker):
    """Score every (query, passage) pair with a cross-encoder and keep the best.

    ``model``: hub id or local folder. Default ``cross-encoder/ms-marco-MiniLM-L-6-v2``, overridden by
    the ``TWOSTAGE_RERANK_MODEL`` environment variable (useful offline: point it at a model folder).
    ``batch_size``: pairs per forward pass. ``max_length``: token limit per pair (default: the model's).
    ``device``: ``"cpu"``, ``"cuda"``... (default: what sentence-transformers picks).

    Scores are the model's output after its configured activation (sigmoid models give 0..1).

    >>> from twostage_integrations import CrossEncoderReranker, Hit
    >>> ce = CrossEncoderReranker("path/to/cross-encoder")  # doctest: +SKIP
    >>> hits = [Hit(id="1", text="Paris is in France."), Hit(id="2", text="Bananas are yellow.")]
    >>> [h.id for h in ce.rerank("capital of France", hits, top_k=1)]  # doctest: +SKIP
    ['1']
    """

    score_kind = property(cross_encoder_score_kind)  # ce_sigmoid / ce_logit from the activation; docs/scores.md

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        batch_size: int = 32,
        max_length: int | None = None,
        device: str | None = None,
    ) -> None:
        from sentence_transformers import CrossEncoder

        self.name = resolve_rerank_model(model)
        self.batch_size = batch_size
        self.max_length = max_length
        self.model = load_model(
            self.name,
            lambda name, local_only: CrossEncoder(
                name, max_length=max_length, device=device, local_files_only=local_only
            ),
            kind="rerank",
            env_var=RERANK_MODEL_ENV,
            hint=NO_MODEL_HINT,
        )

    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        return self.score_pairs([(query, t) for t in texts])

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        if not pairs:
            return []
        scores = self.model.predict(
            [tuple(p) for p in pairs],
            batch_size=self.batch_size,
            show_progress_bar=False,
            convert_to_numpy=True,
        )
        # Plain floats: numpy float32 breaks JSON serialisation downstream.
        return [float(s) for s in scores.reshape(len(pairs), -1)[:, 0]]
