"""Sentence-transformers embeddings for stage 1."""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import cached_property

import numpy as np
from tqdm.auto import tqdm

from .models import EMBEDDING_MODEL_ENV, load_model, resolve_embedding_model


class Embedder:
    """Unit-length sentence embeddings (so a dot product is the cosine similarity).

    ``model``: hub id or local folder; default all-MiniLM-L6-v2 (see :func:`resolve_embedding_model`).

    >>> emb = Embedder()
    >>> emb.embed(["aspirin and stroke"]).shape
    (1, 384)
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        batch_size: int = 64,
        device: str | None = None,
    ) -> None:
        self.load_from, self.name = resolve_embedding_model(model)
        self.batch_size = batch_size
        self.device = device

    @cached_property
    def model(self):
        from sentence_transformers import SentenceTransformer

        return load_model(
            self.load_from,
            lambda name, local_only: SentenceTransformer(name, device=self.device, local_files_only=local_only),
            kind="embedding",
            env_var=EMBEDDING_MODEL_ENV,
        )

    @property
    def dimension(self) -> int:
        getter = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        dim = getter()
        return int(dim) if dim is not None else int(self.embed(["x"]).shape[1])

    def embed(self, texts: Sequence[str], *, progress: bool = False, desc: str = "embedding") -> np.ndarray:
        """Embed ``texts`` in batches; ``progress=True`` shows a tqdm bar over texts."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        chunks = []
        with tqdm(total=len(texts), desc=desc, unit="text", disable=not progress) as bar:
            for start in range(0, len(texts), self.batch_size):
                batch = texts[start : start + self.batch_size]
                chunks.append(
                    self.model.encode(
                        batch,
                        batch_size=self.batch_size,
                        normalize_embeddings=True,
                        convert_to_numpy=True,
                        show_progress_bar=False,
                    )
                )
                bar.update(len(batch))
        return np.vstack(chunks).astype(np.float32, copy=False)

    def embed_query(self, query: str) -> np.ndarray:
        return self.embed([query])[0]


def as_embedder(model: str | os.PathLike[str] | Embedder | None = None) -> Embedder:
    """``model`` itself when it is already an :class:`Embedder` (shares the loaded model), else a new one."""
    return model if isinstance(model, Embedder) else Embedder(model)
