"""RerankService (server/service.py) without HTTP: admission (429 + retry hint when the queue is full, 503 while
draining), dynamic batching (concurrent requests merged into one model call and split back), deadlines and hang-ups
(queued work is cancelled and never scored). A gated fake model, no weights."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import pytest

from twostage_integrations.errors import InvalidDocumentError
from twostage_integrations.server import RequestError, RerankService
from twostage_integrations.testing import FakeReranker


class GatedPairReranker(FakeReranker):
    """FakeReranker's word-overlap scores, but ``score_pairs`` takes pairs of many queries in one call (so the
    service merges requests) and waits for ``gate`` first: a slow model the test controls. ``pair_calls``
    records the pairs of every model call; ``entered`` counts calls started (a gated call counts while it waits).
    """

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()
        self.entered = 0
        self.pair_calls: list[list[tuple[str, str]]] = []

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        self.entered += 1
        assert self.gate.wait(timeout=30), "the test never opened the gate"
        self.pair_calls.append(list(pairs))
        if any(text == "refuse" for _, text in pairs):
            raise InvalidDocumentError("the fake refuses the text 'refuse'")
        return [own_score(q, t) for q, t in pairs]


def own_score(query: str, text: str) -> float:
    """The fake's score of one pair, computed alone: what a request must get back however it was batched."""
    return FakeReranker().score(query, [text])[0]


async def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


@pytest.fixture
def model() -> GatedPairReranker:
    return GatedPairReranker()


@pytest.fixture
def make_service(model: GatedPairReranker) -> Iterator[Callable[..., RerankService]]:
    """Builds services around ``model`` (batch wait 0: a merged batch is whatever is queued) and closes them."""
    made: list[RerankService] = []

    def make(**kwargs: object) -> RerankService:
        service = RerankService(model, batch_wait_ms=0, **kwargs)  # type: ignore[arg-type]
        made.append(service)
        return service

    yield make
    model.gate.set()  # a test that failed with the gate closed must not hang the worker
    for service in made:
        service.close(timeout=10)


async def stall(service: RerankService, model: GatedPairReranker, query: str = "stuck") -> asyncio.Task:
    """Close the gate and submit one request the worker takes and blocks on; the queue behind it then fills."""
    await wait_for(lambda: service.state == "ready", "the warm-up call")
    model.gate.clear()
    entered = model.entered
    task = asyncio.create_task(service.score(query, ["stuck document"]))
    await wait_for(lambda: model.entered == entered + 1, "the model to take the first request")
    return task


async def test_a_full_queue_refuses_with_429_and_a_retry_hint(model, make_service):
    service = make_service(max_queue=2)
    first = await stall(service, model)
    queued = asyncio.create_task(service.score("queued", ["a queued document"]))
    await wait_for(lambda: service.counters["in_progress"] == 2, "the queue to fill")

    with pytest.raises(RequestError) as info:
        await service.score("one too many", ["refused document"])
    assert info.value.status_code == 429 and "capacity" in info.value.message
    assert info.value.retry_after is not None and 1 <= info.value.retry_after <= 60
    assert service.counters["rejected_full"] == 1

    model.gate.set()
    assert await first == [own_score("stuck", "stuck document")]
    assert await queued == [own_score("queued", "a queued document")]
    assert not any(q == "one too many" for call in model.pair_calls for q, _ in call)  # refused: never scored
    assert service.counters["in_progress"] == 0 and service.pending_pairs == 0
    assert service.counters["requests"] == 2


async def test_concurrent_requests_are_merged_into_one_model_call_and_split_back(model, make_service):
    service = make_service(max_queue=16)
    first = await stall(service, model)
    # Documents of very different lengths: the service sorts merged pairs by length, so a mix-up in
    # un-sorting or splitting would hand a request another document's score.
    jobs = {
        "aspirin stroke": ["a long passage on aspirin and the risk of stroke in older adults", "stroke", "bananas"],
        "vitamin bone": ["bone", "vitamin d and bone density: a randomised trial in women", "vitamin"],
        "insulin": ["insulin resistance", "nothing relevant here at all, just a long and unrelated sentence"],
    }
    tasks = {q: asyncio.create_task(service.score(q, docs)) for q, docs in jobs.items()}
    await wait_for(lambda: service.counters["in_progress"] == 1 + len(jobs), "the requests to queue")
    calls_before = len(model.pair_calls)
    model.gate.set()
    await first
    results = {q: await task for q, task in tasks.items()}

    for query, docs in jobs.items():
        assert results[query] == [own_score(query, d) for d in docs]  # its own scores, in document order
    merged = model.pair_calls[calls_before + 1 :]  # after the stalled request's own call
    assert len(merged) == 1, "the three queued requests should go out in one model call"
    assert sorted(merged[0]) == sorted((q, d) for q, docs in jobs.items() for d in docs)
    assert service.merged_batches >= 1 and service.largest_batch == len(jobs)


async def test_the_deadline_drops_queued_work_which_is_never_scored(model, make_service):
    service = make_service(request_timeout=0.3)
    running = await stall(service, model)
    queued = asyncio.create_task(service.score("queued", ["dropped document"]))
    for task in (running, queued):
        with pytest.raises(RequestError) as info:
            await task
        assert info.value.status_code == 504 and "timed out after 0.3 s" in info.value.message
        assert info.value.retry_after is not None and info.value.retry_after >= 1
    assert service.counters["timed_out"] == 2 and service.counters["in_progress"] == 0

    calls_before = len(model.pair_calls)  # the warm-up call; the stalled one is still waiting at the gate
    model.gate.set()
    assert await service.score("after", ["later document"]) == [own_score("after", "later document")]
    # The stalled call had started, so it ran to its end; the queued one was cancelled and skipped.
    assert model.pair_calls[calls_before:] == [[("stuck", "stuck document")], [("after", "later document")]]


async def test_a_client_that_hangs_up_while_queued_is_cancelled(model, make_service):
    service = make_service()
    running = await stall(service, model)

    async def gone() -> bool:
        return True

    with pytest.raises(RequestError) as info:
        await service.score("impatient", ["never scored"], is_disconnected=gone)
    assert info.value.status_code == 499 and service.counters["abandoned"] == 1
    model.gate.set()
    await running
    assert await service.score("later", ["x"]) == [own_score("later", "x")]
    assert not any(q == "impatient" for call in model.pair_calls for q, _ in call)


async def test_draining_refuses_new_work_with_503(make_service):
    service = make_service()
    await wait_for(lambda: service.ready, "readiness")
    service.draining = True
    with pytest.raises(RequestError) as info:
        await service.score("q", ["a"])
    assert info.value.status_code == 503 and info.value.retry_after == 1 and "shutting down" in info.value.message
    assert service.counters["rejected_not_ready"] == 1 and service.counters["in_progress"] == 0


async def test_input_the_reranker_refuses_is_a_400_for_that_request_only(model, make_service):
    service = make_service()
    await wait_for(lambda: service.ready, "readiness")
    with pytest.raises(RequestError) as info:
        await service.score("q", ["fine", "refuse"])
    assert info.value.status_code == 400 and "refuses" in info.value.message
    assert service.counters["failed"] == 0  # the client's input, not a broken model
    assert await service.score("q", ["fine"]) == [own_score("q", "fine")]


def test_stats_report_the_counters_and_the_batching():
    service = RerankService(FakeReranker(), max_queue=4)
    try:
        assert asyncio.run(service.score("aspirin", ["aspirin", "bananas"])) == [1.0, 0.0]
        stats = service.stats()
        assert stats["requests"] == 1 and stats["documents"] == 2 and stats["in_progress"] == 0
        assert stats["batching"] is False  # FakeReranker scores one query per call: served per request
    finally:
        service.close()


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"max_queue": 0}, "max_queue"),
        ({"max_batch": -1}, "max_batch"),
        ({"batch_wait_ms": -1}, "batch_wait_ms"),
        ({"request_timeout": 0}, "request_timeout"),
    ],
)
def test_limits_out_of_range_are_refused_before_the_worker_starts(kwargs, name):
    from twostage_integrations.errors import InvalidParameterError

    threads = threading.active_count()
    with pytest.raises(InvalidParameterError, match=name):
        RerankService(FakeReranker(), **kwargs)
    assert threading.active_count() == threads
