"""`twostage serve` warm-up: /ready stays 503 until every local stage has run at the shapes real requests give it
(a full batch at the model's max_length, a half-length batch, a one-pair remainder). Fakes only, no weights."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from fastapi.testclient import TestClient

from twostage_integrations.rerank.cache import ScoreCache
from twostage_integrations.rerank.cascade import Cascade
from twostage_integrations.rerank.fusion import FusedReranker
from twostage_integrations.server import RerankService, create_app
from twostage_integrations.testing import FakeReranker


class ShapedReranker(FakeReranker):
    """A fake with an engine's ``max_length``/``batch_size`` whose ``score_pairs`` (so it batches across queries)
    records each call and, while ``hold`` is set, blocks its first call on ``release``."""

    def __init__(self, name: str = "shaped", *, max_length: int = 32, batch_size: int = 4, hold: bool = False):
        super().__init__()
        self.name, self.max_length, self.batch_size = name, max_length, batch_size
        self.pair_calls: list[list[tuple[str, str]]] = []
        self.entered, self.release = threading.Event(), threading.Event()
        if not hold:
            self.release.set()

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        self.entered.set()
        assert self.release.wait(timeout=30), "the test never released the warm-up"
        self.pair_calls.append(list(pairs))
        return [self.score(q, [t])[0] for q, t in pairs]


class HostedLike(FakeReranker):
    """BaseReranker's per-query score_pairs: a hosted API, which warm-up must not call."""

    name = "hosted-like"


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def test_ready_is_503_until_the_warm_up_has_finished():
    model = ShapedReranker(hold=True)
    app = create_app(model)
    with TestClient(app) as http:
        assert model.entered.wait(10), "the warm-up never started"
        blocked = http.get("/ready")
        assert blocked.status_code == 503 and blocked.json() == {"ready": False, "state": "warming"}
        model.release.set()
        wait_until(lambda: app.state.service.ready, "the warm-up to finish")
        ready = http.get("/ready")
        assert ready.status_code == 200 and ready.json()["ready"] is True
        response = http.post("/v2/rerank", json={"query": "drug stroke", "documents": ["a drug", "stroke"]})
        assert response.status_code == 200
    (warm, request) = model.pair_calls  # the warm-up ran once, before the request
    assert [len(t.split()) for _, t in warm] == [32] * 4 + [16] * 4 + [8]  # max_length, half, a remainder
    assert request == [("drug stroke", "a drug"), ("drug stroke", "stroke")]
    assert app.state.service.stats()["pairs_scored"] == 2  # warm-up pairs are not counted as served


def test_every_local_stage_is_warmed_and_the_cache_stays_empty():
    tiny, ce = ShapedReranker("tiny", max_length=8, batch_size=2), ShapedReranker("ce", max_length=16, batch_size=3)
    hosted = HostedLike()
    cascade = Cascade([(tiny, 3), (FusedReranker(ce, weight=0.5), None)])
    service = RerankService(cascade)
    try:
        wait_until(lambda: service.ready, "readiness")
    finally:
        service.close(timeout=10)
    assert [len(t.split()) for _, t in tiny.pair_calls[0]] == [8, 8, 4, 4, 8]
    assert [len(t.split()) for _, t in ce.pair_calls[0]] == [16] * 3 + [8] * 3 + [8]

    inner = ShapedReranker()
    cache = ScoreCache(inner, maxsize=10)
    for served in (cache, hosted):
        service = RerankService(served)
        try:
            wait_until(lambda service=service: service.ready, "readiness")
        finally:
            service.close(timeout=10)
    assert len(inner.pair_calls) == 1 and len(cache) == 0 and cache.misses == 0  # warmed behind the cache
    assert hosted.calls == []  # a hosted API is not called to warm up
