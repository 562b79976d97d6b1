"""What the LlamaIndex postprocessor costs on top of calling the core reranker directly.

Same SciFact test queries, same 20 candidates each (the query's relevant abstracts plus seeded random
ones), same cross-encoder. Two numbers:

1. adapter only: model scores memoised after a first pass, so the timing is the node <-> hit translation,
   the copies and the LlamaIndex events/spans;
2. end to end: the real model every call (model time dominates; noisy on a busy machine).

Usage: python benchmarks/bench_llama_index.py BEIR_SCIFACT_DIR CROSS_ENCODER_DIR [N_QUERIES]
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from pathlib import Path

from llama_index.core.schema import MetadataMode, NodeWithScore, TextNode

from twostage_integrations import CrossEncoderReranker, Hit
from twostage_integrations.evaluation import CachedReranker, load_beir
from twostage_integrations.llama_index import TwoStageRerank

N_CANDIDATES, TOP_N, REPEATS = 20, 5, 50


def load(folder: Path, n_queries: int) -> list[tuple[str, list[Hit]]]:
    """Each judged query with N_CANDIDATES candidates: its relevant abstracts, then seeded random ones."""
    data = load_beir(folder, "test", max_queries=n_queries)
    rng, ids = random.Random(13), sorted(data.corpus)
    cases = []
    for qid, query in data.queries.items():
        docs = (list(data.qrels[qid]) + rng.sample(ids, N_CANDIDATES))[:N_CANDIDATES]
        hits = [Hit(id=d, text=data.corpus[d], score=1 - r / 100, recall_score=1 - r / 100, recall_rank=r)
                for r, d in enumerate(docs, start=1)]  # fmt: skip
        cases.append((query, hits))
    return cases


def per_call(fn, cases, repeats: int) -> list[float]:
    times = []
    for query, hits, nodes in cases:
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn(query, hits, nodes)
        times.append((time.perf_counter() - t0) / repeats)
    return times


def main() -> None:
    folder, model = Path(sys.argv[1]), sys.argv[2]
    n_queries = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    cases = [(q, hits, [NodeWithScore(node=TextNode(id_=h.id, text=h.text), score=h.score) for h in hits])
             for q, hits in load(folder, n_queries)]  # fmt: skip
    ce = CrossEncoderReranker(model)

    def core(reranker):
        return lambda q, hits, nodes: reranker.rerank(q, hits, TOP_N)

    def adapter(reranker):
        post = TwoStageRerank(reranker, top_n=TOP_N, metadata_mode=MetadataMode.NONE)
        return lambda q, hits, nodes: post.postprocess_nodes(nodes, query_str=q)

    memo = CachedReranker(ce)
    per_call(core(memo), cases, 1)  # fill the cache
    # interleave so machine load hits both sides alike
    core_t, adapter_t = [], []
    for _ in range(3):
        core_t += per_call(core(memo), cases, REPEATS)
        adapter_t += per_call(adapter(memo), cases, REPEATS)
    c, a = statistics.median(core_t), statistics.median(adapter_t)
    print(f"adapter only ({N_CANDIDATES} nodes, top_n={TOP_N}, median per call over {len(cases)} queries):")
    print(f"  core rerank {c * 1e6:8.0f} us | TwoStageRerank {a * 1e6:8.0f} us | overhead {(a - c) * 1e6:6.0f} us")

    core_t, adapter_t = [], []
    for query, hits, nodes in cases:  # alternate per query
        core_t += per_call(core(ce), [(query, hits, nodes)], 1)
        adapter_t += per_call(adapter(ce), [(query, hits, nodes)], 1)
    c, a = statistics.median(core_t), statistics.median(adapter_t)
    print(f"end to end with the model (median per query over {len(cases)} queries):")
    print(f"  core rerank {c * 1e3:8.1f} ms | TwoStageRerank {a * 1e3:8.1f} ms | ratio {a / c:.3f}")


if __name__ == "__main__":
    main()
