"""Model-free stand-ins for tests: a :class:`FakeEmbedder` and a :class:`FakeReranker`.

Like ``langchain_core.embeddings.fake``, they let code built on this package be tested without model
weights: deterministic, fast, and good enough to check plumbing (ids, ordering, filters, scores carried
through), never quality. The package's own fast test tier (``python -m pytest tests/unit``) uses them.

>>> from twostage_integrations.testing import FakeEmbedder, FakeReranker
>>> emb = FakeEmbedder()
>>> float(emb.embed(["aspirin stroke"])[0] @ emb.embed_query("stroke aspirin")) > 0.99
True
>>> [h.id for h in FakeReranker().rerank("aspirin", [Hit(id="a", text="bananas"), Hit(id="b", text="aspirin")])]
['b', 'a']
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

from .embeddings import BaseEmbedder
from .hit import Hit
from .rerank.base import BaseReranker

__all__ = ["FakeEmbedder", "FakeReranker", "Hit", "tokens"]


def tokens(text: str) -> list[str]:
    """Lower-cased word tokens.

    Args:
        text: Any text.

    Returns:
        The ``\\w+`` runs of ``text.lower()``, in order.
    """
    return re.findall(r"\w+", text.lower())


def _bucket(token: str, dimension: int) -> int:
    # md5, not hash(): Python salts str hashes per process, and vectors must be stable across runs.
    return int.from_bytes(hashlib.md5(token.encode()).digest()[:4], "little") % dimension


class FakeEmbedder(BaseEmbedder):
    """Hashed bag-of-words, unit length: texts sharing words have a high cosine, others about 0.

    Not a model: no weights, no meaning beyond shared words. ``calls`` counts :meth:`embed` calls (texts
    embedded per call in ``batches``) so tests can check what was (not) embedded.

    Args:
        dimension: Vector length.
        name: The model name recorded in collections.
    """

    def __init__(self, dimension: int = 256, *, name: str = "fake-bag-of-words") -> None:
        super().__init__(name)
        self._dimension = dimension
        self.calls = 0
        self.batches: list[int] = []

    @property
    def dimension(self) -> int:
        """Vector length."""
        return self._dimension

    def embed(self, texts: Sequence[str], *, progress: bool = False, desc: str = "embedding") -> np.ndarray:
        """Embed texts as hashed bags of words.

        Args:
            texts: The texts.
            progress: Ignored (no progress bar to show).
            desc: Ignored.

        Returns:
            A ``(len(texts), dimension)`` float32 array of unit rows; a text without words gets ``e_0``.
        """
        self.calls += 1
        self.batches.append(len(texts))
        out = np.zeros((len(texts), self._dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for token in tokens(text):
                out[row, _bucket(token, self._dimension)] += 1.0
            norm = float(np.linalg.norm(out[row]))
            if norm:
                out[row] /= norm
            else:
                out[row, 0] = 1.0  # still unit length: Chroma's cosine maths assumes it
        return out


class FakeReranker(BaseReranker):
    """Scores a text by the share of the query's distinct words it contains (0..1); ties keep recall order.

    Not a model. ``calls`` records every ``score`` call as ``(query, number of texts)``.
    """

    name = "fake-word-overlap"
    score_kind = "fake_overlap"

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        """Score texts by word overlap with the query.

        Args:
            query: The query text.
            texts: The passages.

        Returns:
            One score per text: the share of the query's distinct words it contains, 0..1.
        """
        self.calls.append((query, len(texts)))
        wanted = set(tokens(query))
        return [len(wanted & set(tokens(t))) / max(len(wanted), 1) for t in texts]
