"""An LRU score cache in front of any reranker: each (model, query, document) pair is scored once.

Useful when the same candidates come back again and again (a server behind a search box, repeated
pipeline queries, pagination). Off by default everywhere; ``twostage serve --cache-size N`` turns it on.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from collections.abc import Sequence

from ..errors import RerankScoresError
from ..validation import check_positive_int
from .base import BaseReranker


def pair_key(model: str, query: str, text: str) -> bytes:
    """The cache key of one pair: the cache keeps digests, never the texts themselves.

    Length prefixes keep ``("ab", "c")`` and ``("a", "bc")`` apart.

    Args:
        model: The reranker's name.
        query: The query text.
        text: The passage text.

    Returns:
        A 16-byte BLAKE2b digest of the three.

    >>> pair_key("m", "ab", "c") != pair_key("m", "a", "bc")
    True
    """
    h = hashlib.blake2b(digest_size=16)
    for part in (model, query, text):
        data = part.encode("utf-8", "surrogatepass")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.digest()


class ScoreCache(BaseReranker):
    """An LRU cache of pair scores in front of a :class:`BaseReranker`.

    ``score``/``score_pairs`` look every pair up and send only the misses (each distinct pair once) to the
    inner reranker, in one ``score_pairs`` call, so a cross-encoder still scores them in one batch. Results
    equal the inner reranker's. Thread-safe: the lock is held for lookups and inserts, never during model
    work, so two threads missing the same pair at once may both score it (the answer is the same).
    Non-finite scores are passed through but never cached. ``hits``/``misses`` count pair lookups (so they add
    up to the pairs asked for), ``evictions`` the pairs pushed out.

    Args:
        reranker: The reranker whose scores are cached.
        maxsize: Pair scores kept, least recently used out first; ``None``: no bound, for a finite job such as
            an evaluation that compares configurations.

    Raises:
        InvalidParameterError: If ``maxsize`` is below 1.

    >>> from twostage_integrations import CrossEncoderReranker
    >>> cached = ScoreCache(CrossEncoderReranker("path/to/cross-encoder"), maxsize=100_000)  # doctest: +SKIP
    >>> cached.score("aspirin", ["Aspirin lowers stroke risk."]); cached.misses  # doctest: +SKIP
    1
    >>> cached.score("aspirin", ["Aspirin lowers stroke risk."]); cached.hits  # doctest: +SKIP
    1
    """

    def __init__(self, reranker: BaseReranker, maxsize: int | None = 100_000) -> None:
        self.inner = reranker
        self.name = reranker.name
        self.maxsize = None if maxsize is None else check_positive_int(maxsize, "maxsize")
        self._scores: OrderedDict[bytes, float] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    @property
    def score_kind(self) -> str:  # type: ignore[override]  # the inner model's scale, see docs/scores.md
        """The inner reranker's score kind."""
        return getattr(self.inner, "score_kind", "rerank")

    def _score_misses(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """Where the pairs not in the cache are scored (a subclass may time or count them)."""
        return self.inner.score_pairs(pairs)

    def __len__(self) -> int:
        return len(self._scores)

    def stats(self) -> dict[str, int | None]:
        """Counters for logs and ``/health``.

        Returns:
            ``size``, ``maxsize``, ``hits``, ``misses`` and ``evictions``.
        """
        with self._lock:
            return {
                "size": len(self._scores),
                "maxsize": self.maxsize,
                "hits": self.hits,
                "misses": self.misses,
                "evictions": self.evictions,
            }

    def clear(self) -> None:
        """Forget every cached score (the counters are kept)."""
        with self._lock:
            self._scores.clear()

    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        """Score texts, from the cache where possible.

        Args:
            query: The query text.
            texts: The passages.

        Returns:
            One score per text, equal to the inner reranker's.

        Raises:
            RerankScoresError: If the inner reranker returns the wrong number of scores.
        """
        return self.score_pairs([(query, t) for t in texts])

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """Score ``(query, text)`` pairs, sending only the misses (each once) to the inner reranker.

        Args:
            pairs: ``(query, text)`` pairs, queries mixed.

        Returns:
            One score per pair, in input order.

        Raises:
            RerankScoresError: If the inner reranker returns the wrong number of scores.
        """
        keys = [pair_key(self.name, q, t) for q, t in pairs]
        out: list[float | None] = [None] * len(pairs)
        todo: dict[bytes, list[int]] = {}  # each missing pair once, however often it repeats in this call
        with self._lock:
            for i, key in enumerate(keys):
                cached = self._scores.get(key)
                if cached is None:
                    todo.setdefault(key, []).append(i)
                else:
                    self._scores.move_to_end(key)
                    out[i] = cached
            misses = sum(len(v) for v in todo.values())
            self.hits += len(pairs) - misses
            self.misses += misses
        if todo:
            first = [idx[0] for idx in todo.values()]
            scores = self._score_misses([pairs[i] for i in first])
            if len(scores) != len(first):
                raise RerankScoresError(f"{self.inner!r} returned {len(scores)} scores for {len(first)} pairs")
            with self._lock:
                for (key, idx), s in zip(todo.items(), scores, strict=True):
                    s = float(s)
                    for i in idx:
                        out[i] = s
                    if math.isfinite(s):
                        self._scores[key] = s
                        self._scores.move_to_end(key)
                while self.maxsize is not None and len(self._scores) > self.maxsize:
                    self._scores.popitem(last=False)
                    self.evictions += 1
        return out  # type: ignore[return-value]  # every slot is filled above

    def __repr__(self) -> str:
        return f"ScoreCache({self.inner!r}, maxsize={self.maxsize})"
