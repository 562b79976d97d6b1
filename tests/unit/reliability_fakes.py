"""Fakes for the model-free reliability tests (plumbing only, never quality)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

from twostage_integrations.embeddings import Embedder


class FakeEmbedder(Embedder):
    """A hashed bag of words, unit length: texts sharing words are close. No model weights.

    ``vectors`` pins the vector of given texts (to query a collection built from raw vectors).
    """

    def __init__(self, dimension: int = 64, vectors: dict[str, np.ndarray] | None = None) -> None:
        self.name = f"fake-hash-{dimension}"
        self._dim = dimension
        self.batch_size = 64
        self.vectors = vectors or {}

    @property
    def dimension(self) -> int:
        return self._dim

    def _one(self, text: str) -> np.ndarray:
        if text in self.vectors:
            return np.asarray(self.vectors[text], dtype=np.float32)
        v = np.zeros(self._dim, dtype=np.float32)
        for word in re.findall(r"\w+", text.lower()):
            v[int(hashlib.md5(word.encode()).hexdigest(), 16) % self._dim] += 1.0
        n = np.linalg.norm(v)
        return v / n if n else v + 1.0 / np.sqrt(self._dim)

    def embed(self, texts: Sequence[str], *, progress: bool = False, desc: str = "embedding") -> np.ndarray:
        return np.stack([self._one(t) for t in texts]) if texts else np.zeros((0, self._dim), dtype=np.float32)

    def embed_query(self, query: str) -> np.ndarray:
        return self._one(query)
