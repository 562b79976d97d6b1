"""Every recall / rerank / fusion configuration of the README table on SciFact, in one process.

    python benchmarks/eval_scifact.py DATASET_DIR RERANK_MODEL [--db DIR] [--out results.json] [--train-queries 60]

The cross-encoder scores each (query, passage) pair once (``CachedReranker``), so the ~20 configurations cost
about as much as the largest one. Fusion defaults are chosen on a slice of the *train* split, never on test.
Timings of cached runs are not latencies: real latency comes from ``twostage eval`` (see the README).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from twostage_integrations import CrossEncoderReranker
from twostage_integrations.evaluation import CachedReranker, evaluate, load_beir
from twostage_integrations.rerank.fusion import FusedReranker

WEIGHTS = [0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("dataset")
    p.add_argument("rerank_model")
    p.add_argument("--db", default=None)
    p.add_argument("--out", default="eval_scifact.json")
    p.add_argument("--train-queries", type=int, default=40)
    args = p.parse_args()
    ce = CachedReranker(CrossEncoderReranker(args.rerank_model))
    results: dict = {"configs": []}
    out = Path(args.out)

    def run(label, data, **kw):
        t0 = time.perf_counter()
        report = evaluate(data, db=args.db, progress=False, **kw)
        row = {"label": label, "split": data.split, "wall_s": time.perf_counter() - t0, **report.to_dict()}
        results["configs"].append(row)
        out.write_text(json.dumps(results, indent=1))
        last = report.stages[-1].metrics
        k = f"Recall@{kw['limit']}"
        print(f"{label:55s} nDCG@10={last['nDCG@10']:.4f} {k}={last[k]:.4f}", flush=True)
        return report

    # 1. test: recall alone
    test = load_beir(args.dataset, "test")
    hyb = dict(recall="hybrid", limit=100, candidates_per_arm=50)
    for kind in ("dense", "bm25", "hybrid"):
        run(f"{kind} (limit 50)", test, recall=kind, limit=50)
    run("hybrid (limit 100 = top 50 per arm fused)", test, **hyb)
    # 2. test: reranked
    for kind in ("dense", "bm25", "hybrid"):
        run(f"{kind} + CE (limit 50)", test, recall=kind, limit=50, reranker=ce)
    run("hybrid + CE (limit 100, 50 per arm)", test, reranker=ce, **hyb)
    # 3. fusion defaults on a train slice (hybrid, 50 per arm, limit 100)
    train = load_beir(args.dataset, "train", max_queries=args.train_queries)
    best = {}
    for method in ("rrf", "minmax"):
        scores = {}
        for w in WEIGHTS:
            r = run(
                f"train: hybrid+CE fused {method} w={w}",
                train,
                reranker=FusedReranker(ce, weight=w, method=method),
                **hyb,
            )
            scores[w] = r.stages[-1].metrics["nDCG@10"]
        best[method] = max(scores, key=lambda w: (scores[w], -abs(w - 0.5)))
    results["train_choice"] = best
    print("chosen on train:", best, flush=True)

    for method in ("rrf", "minmax"):
        for w in WEIGHTS[1:-1]:
            tag = " [train choice]" if w == best[method] else ""
            run(
                f"hybrid + CE fused {method} w={w}{tag}",
                test,
                reranker=FusedReranker(ce, weight=w, method=method),
                **hyb,
            )
    w = best["rrf"]
    run(
        f"cascade: hybrid 100 -> CE keep 30 -> fused rrf w={w}",
        test,
        reranker=[(ce, 30), (FusedReranker(ce, weight=w), None)],
        **hyb,
    )
    run("dense + CE (limit 100)", test, recall="dense", limit=100, reranker=ce)
    run("bm25 + CE (limit 100)", test, recall="bm25", limit=100, reranker=ce)
    run("hybrid + CE (limit 100, 100 per arm)", test, recall="hybrid", limit=100, reranker=ce)
    results["ce_pairs"] = {"n": ce.pairs_scored, "seconds": ce.seconds_scoring}
    out.write_text(json.dumps(results, indent=1))
    print(f"CE: {ce.pairs_scored} pairs in {ce.seconds_scoring:.0f} s", flush=True)


if __name__ == "__main__":
    main()
