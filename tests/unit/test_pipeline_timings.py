"""last_timings is per thread / per asyncio task: concurrent callers never read another call's numbers."""

from __future__ import annotations

import asyncio
import threading
import time

from twostage_integrations import Hit, TwoStagePipeline


class FakeRecall:
    """Returns one hit after sleeping as many milliseconds as the query says (so calls overlap and differ)."""

    def search(self, query, limit=20, *, where=None, where_document=None):
        time.sleep(int(query) / 1000)
        return [Hit(id=query, text=query, recall_rank=1)]

    async def asearch(self, query, limit=20, *, where=None, where_document=None):
        await asyncio.sleep(int(query) / 1000)
        return [Hit(id=query, text=query, recall_rank=1)]


def test_threads_each_read_their_own_last_timings():
    pipe = TwoStagePipeline(FakeRecall(), limit=1, top_k=1)
    n = 8
    finished = threading.Barrier(n)
    mine: dict[int, object] = {}
    seen: dict[int, object] = {}

    def worker(i: int) -> None:
        mine[i] = pipe.run(str(5 + 7 * i)).timings
        finished.wait()  # every thread has searched before any reads last_timings
        seen[i] = pipe.last_timings

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(seen[i] is mine[i] for i in range(n))
    assert len({id(t) for t in mine.values()}) == n


async def test_tasks_each_read_their_own_last_timings():
    pipe = TwoStagePipeline(FakeRecall(), limit=1, top_k=1)

    async def one(ms: int):
        result = await pipe.arun(str(ms))
        await asyncio.sleep(0.03)  # let the other task finish its search meanwhile
        return result.timings, pipe.last_timings

    for own, seen in await asyncio.gather(one(1), one(20), one(5)):
        assert seen is own
    assert pipe.last_timings.total_s == 0.0  # the parent task searched nothing itself


def test_two_pipelines_in_one_thread_keep_their_own():
    a, b = TwoStagePipeline(FakeRecall(), limit=1, top_k=1), TwoStagePipeline(FakeRecall(), limit=1, top_k=1)
    ta, tb = a.run("1").timings, b.run("2").timings
    assert a.last_timings is ta and b.last_timings is tb
