"""ScoreCache (rerank/cache.py) with a counting fake reranker: plumbing only, no model weights."""

from __future__ import annotations

import math
import random
import threading
import zlib
from collections.abc import Sequence

import pytest

from twostage_integrations import Hit
from twostage_integrations.errors import InvalidParameterError
from twostage_integrations.rerank.base import BaseReranker
from twostage_integrations.rerank.cache import ScoreCache, pair_key


class CountingFakeReranker(BaseReranker):
    """Deterministic pseudo-scores from a CRC of (query, text); records every pair it is asked to score."""

    name = "fake-ce"

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self.calls = 0
        self._lock = threading.Lock()

    @staticmethod
    def value(query: str, text: str) -> float:
        if text == "nan":
            return math.nan
        return zlib.crc32(f"{query}\x00{text}".encode()) / 2**32

    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        return self.score_pairs([(query, t) for t in texts])

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        with self._lock:
            self.calls += 1
            self.seen.extend(pairs)
        return [self.value(q, t) for q, t in pairs]


def test_hits_do_not_call_the_model_and_results_equal_uncached():
    inner = CountingFakeReranker()
    cache = ScoreCache(inner, maxsize=100)
    texts = ["alpha", "beta", "gamma", "beta"]  # a repeat inside one call is scored once
    first = cache.score("q", texts)
    assert first == [inner.value("q", t) for t in texts]
    assert inner.seen == [("q", "alpha"), ("q", "beta"), ("q", "gamma")] and inner.calls == 1
    assert (cache.hits, cache.misses) == (0, 4)

    again = cache.score("q", ["gamma", "alpha"])
    assert again == [inner.value("q", "gamma"), inner.value("q", "alpha")]
    assert inner.calls == 1  # all hits: the model is not called at all
    assert (cache.hits, cache.misses) == (2, 4)

    mixed = cache.score_pairs([("q", "alpha"), ("other query", "alpha"), ("q", "delta")])
    assert mixed == [inner.value(*p) for p in [("q", "alpha"), ("other query", "alpha"), ("q", "delta")]]
    assert inner.seen[3:] == [("other query", "alpha"), ("q", "delta")]  # only the misses, in one call
    assert inner.calls == 2


def test_rerank_through_the_cache_equals_the_inner_reranker():
    inner = CountingFakeReranker()
    cache = ScoreCache(CountingFakeReranker(), maxsize=10)
    hits = [Hit(id=str(i), text=f"passage {i}") for i in range(8)]
    for _ in range(2):  # cold, then warm
        got = cache.rerank("query", hits, top_k=5)
        want = inner.rerank("query", hits, top_k=5)
        assert [(h.id, h.rerank_score, h.rerank_rank) for h in got] == [
            (h.id, h.rerank_score, h.rerank_rank) for h in want
        ]
    assert cache.inner.calls == 1


def test_lru_evicts_the_least_recently_used_pair():
    inner = CountingFakeReranker()
    cache = ScoreCache(inner, maxsize=2)
    cache.score("q", ["a", "b"])
    cache.score("q", ["a"])  # touch a: b is now the oldest
    cache.score("q", ["c"])  # evicts b
    assert len(cache) == 2 and cache.evictions == 1
    before = len(inner.seen)
    cache.score("q", ["a", "c"])
    assert len(inner.seen) == before  # a and c survived
    cache.score("q", ["b"])
    assert inner.seen[-1] == ("q", "b")  # b was evicted, so it is scored again
    assert cache.stats() == {"size": 2, "maxsize": 2, "hits": 3, "misses": 4, "evictions": 2}


def test_unbounded_cache_never_evicts():
    cache = ScoreCache(CountingFakeReranker(), maxsize=None)
    cache.score("q", [f"doc {i}" for i in range(500)])
    assert len(cache) == 500 and cache.evictions == 0


def test_non_finite_scores_are_returned_but_never_cached():
    inner = CountingFakeReranker()
    cache = ScoreCache(inner, maxsize=10)
    assert math.isnan(cache.score("q", ["nan"])[0])
    assert math.isnan(cache.score("q", ["nan"])[0])
    assert inner.calls == 2 and len(cache) == 0


def test_threads_share_one_cache_safely():
    inner = CountingFakeReranker()
    cache = ScoreCache(inner, maxsize=50)  # smaller than the 120 distinct pairs: evictions race with lookups
    universe = [(f"q{i % 6}", f"doc {i}") for i in range(120)]
    errors: list[str] = []
    start = threading.Barrier(8)

    def worker(seed: int) -> int:
        rng = random.Random(seed)
        start.wait()
        asked = 0
        for _ in range(200):
            pairs = rng.sample(universe, 7)
            asked += len(pairs)
            if cache.score_pairs(pairs) != [inner.value(*p) for p in pairs]:
                errors.append(f"wrong scores in thread {seed}")
        return asked

    results: list[int] = []
    threads = [threading.Thread(target=lambda s=s: results.append(worker(s))) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert cache.hits + cache.misses == sum(results) == 8 * 200 * 7
    assert cache.hits > 0 and len(cache) <= 50
    assert len(inner.seen) < sum(results)  # the cache saved model work


def test_key_separates_model_query_and_text():
    keys = {pair_key("m", "ab", "c"), pair_key("m", "a", "bc"), pair_key("m2", "ab", "c"), pair_key("m", "c", "ab")}
    assert len(keys) == 4 and all(len(k) == 16 for k in keys)


@pytest.mark.parametrize("maxsize", [0, -1, 1.5, "10", True])
def test_bad_maxsize_is_a_typed_error(maxsize):
    with pytest.raises(InvalidParameterError, match="maxsize"):
        ScoreCache(CountingFakeReranker(), maxsize=maxsize)
