"""Choose the pipeline presets by measurement: nDCG@10 of candidate stage-2 configurations over hybrid recall.

For each dataset and each recall limit (20, 50, 100) the hybrid candidates of every query are recalled once; each
engine configuration (ONNX fp32 / int8, full or shorter ``max_length``) scores every distinct (query, candidate)
pair once (kept per pair in ``--scores``, so adding a limit scores only the new candidates); every candidate preset
(one stage, or a prefilter keeping K then a second stage) is then replayed from those scores, exactly as
:class:`~twostage_integrations.rerank.cascade.Cascade` would order them (stable sort by score). Reported per preset
and limit: nDCG@10, the share of queries whose top 5 equals ``exact``'s, pairs scored per query by each engine, and
an estimated stage-2 cost: pairs per query over each engine's pairs/s, timed back to back on one probe (8 queries'
candidates) before the long scoring starts, so that work later on the machine does not move the estimates
(``twostage bench`` times the chosen presets end to end).

Datasets: SciFact test (labelled; all 300 queries) and a label-free second domain built from the bundled
Python docs corpus: each docstring's one-line summary is the query, its own passage with that summary cut out
is the one relevant document (a domain the cross-encoder never saw).

Usage::

    TWOSTAGE_RERANK_MODEL=/path/to/cross-encoder HF_HUB_OFFLINE=1 \\
    python benchmarks/choose_presets.py --scifact /path/to/beir/scifact --out benchmarks/results/presets.json

Scores are kept in ``--scores`` (a JSON file) so an interrupted run resumes without re-scoring.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from twostage_integrations import CrossEncoderReranker
from twostage_integrations.evaluation.beir import BeirDataset, index_corpus, load_beir
from twostage_integrations.evaluation.metrics import compute_metrics
from twostage_integrations.recall.factory import recall_by_kind

LIMITS = (20, 50, 100)
# name -> CrossEncoderReranker options
ENGINES: dict[str, dict[str, Any]] = {  # cheapest first: a run cut short still has the cheap presets
    "int8@64": {"backend": "onnx-int8", "max_length": 64},
    "int8@128": {"backend": "onnx-int8", "max_length": 128},
    "int8": {"backend": "onnx-int8"},
    "fp32": {"backend": "onnx"},
}
# name -> stages [(engine, keep)], keep None = all it gets
PRESET_CANDIDATES: dict[str, list[tuple[str, int | None]]] = {
    "exact": [("fp32", None)],
    "int8": [("int8", None)],
    "int8@128": [("int8@128", None)],
    **{f"int8:{k} > fp32": [("int8", k), ("fp32", None)] for k in (10, 12, 20)},
    **{f"int8@128:{k} > fp32": [("int8@128", k), ("fp32", None)] for k in (10, 12, 20)},
    **{f"int8@128:{k} > int8": [("int8@128", k), ("int8", None)] for k in (12, 20)},
    **{f"int8@64:{k} > int8": [("int8@64", k), ("int8", None)] for k in (12, 20)},
    **{f"int8@64:{k} > fp32": [("int8@64", k), ("fp32", None)] for k in (12, 20)},
}


def python_docs_domain(folder: Path) -> Path:
    """Write the label-free Python-docs dataset (BEIR layout) into ``folder`` and return it."""
    from twostage_integrations.demo import sample_corpus_path

    rows = [json.loads(line) for line in Path(sample_corpus_path()).read_text(encoding="utf-8").splitlines()]
    corpus, queries, qrels = [], [], []
    for row in rows:
        title, text = row["title"], row["text"]
        head, _, rest = text.partition("\n\n")
        summary = re.sub(r"\*+", "", head.split(":", 1)[1] if ":" in head else head).strip()
        if len(summary.split()) >= 4 and len(rest.split()) >= 20:
            queries.append({"_id": f"q:{row['id']}", "text": summary})
            qrels.append(f"q:{row['id']}\t{row['id']}\t1")
            text = f"{title}\n\n{rest}"
        corpus.append({"_id": row["id"], "title": "", "text": text})
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus), encoding="utf-8")
    (folder / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries), encoding="utf-8")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(qrels) + "\n")
    return folder


def recall_candidates(data: BeirDataset, limits: tuple[int, ...]) -> dict[int, dict[str, list[str]]]:
    """limit -> query id -> hybrid candidate ids (per arm = limit, as `--recall hybrid --limit L`)."""
    chroma = index_corpus(data, progress=True)
    out: dict[int, dict[str, list[str]]] = {}
    for limit in limits:
        recall = recall_by_kind("hybrid", chroma)
        out[limit] = {qid: [h.id for h in recall.search(text, limit)] for qid, text in data.queries.items()}
    return out


def probe_speed(
    data: BeirDataset, candidates: dict[int, dict[str, list[str]]], rerankers: dict[str, Any], queries: int = 8
) -> dict[str, float]:
    """engine -> pairs/s on the same probe (the first ``queries`` queries' candidates at the smallest limit),
    timed back to back before the long scoring, so a busy machine later does not move the estimates."""
    per_query = candidates[min(candidates)]
    probe = [(data.queries[q], [data.corpus[d] for d in per_query[q]]) for q in list(per_query)[:queries]]
    speed: dict[str, float] = {}
    for engine, reranker in rerankers.items():
        reranker.score(probe[0][0], probe[0][1][:4])  # warm up outside the clock
        t0, pairs = time.perf_counter(), 0
        for query, texts in probe:
            reranker.score(query, texts)
            pairs += len(texts)
        speed[engine] = round(pairs / (time.perf_counter() - t0), 2)
    return speed


def score_all(
    data: BeirDataset, candidates: dict[int, dict[str, list[str]]], rerankers: dict[str, Any], scores_file: Path
) -> dict[str, dict[str, dict[str, float]]]:
    """engine -> qid -> doc id -> score for every candidate of any limit. Scores are kept per pair in
    ``scores_file``: a run at a larger limit scores only the candidates earlier runs did not."""
    store: dict[str, Any] = json.loads(scores_file.read_text()) if scores_file.exists() else {}
    for engine, reranker in rerankers.items():
        table = store.setdefault(f"{data.name}|{engine}", {"scores": {}, "pairs": 0, "seconds": 0.0})
        todo = {}
        for qid in data.queries:
            done = table["scores"].setdefault(qid, {})
            missing = sorted({d for per_limit in candidates.values() for d in per_limit[qid]} - done.keys())
            if missing:
                todo[qid] = missing
        for i, (qid, ids) in enumerate(tqdm(todo.items(), desc=f"{data.name} {engine}", unit="query")):
            t0 = time.perf_counter()
            values = reranker.score(data.queries[qid], [data.corpus[d] for d in ids])
            table["seconds"] += time.perf_counter() - t0
            table["pairs"] += len(ids)
            table["scores"][qid].update(zip(ids, values, strict=True))
            if i % 25 == 24 or i == len(todo) - 1:  # write-then-rename: a run killed mid-write keeps the old file
                partial = scores_file.with_name(scores_file.name + ".partial")
                partial.write_text(json.dumps(store))
                os.replace(partial, scores_file)
    return {e: store[f"{data.name}|{e}"]["scores"] for e in ENGINES}


Scores = dict[str, dict[str, dict[str, float]]]  # engine -> query id -> doc id -> score


def replay(stages: list[tuple[str, int | None]], scores: Scores, qid: str, ids: list[str]):
    """The ranking a cascade of these stages returns, and pairs each engine scored."""
    pairs: dict[str, int] = {}
    for engine, keep in stages:
        pairs[engine] = pairs.get(engine, 0) + len(ids)
        ids = sorted(ids, key=lambda d: -scores[engine][qid][d])[:keep]
    return ids, pairs


def evaluate_presets(data, candidates, scores, speed) -> list[dict[str, Any]]:
    rows = []
    for limit, per_query in candidates.items():
        exact_top5 = {q: replay(PRESET_CANDIDATES["exact"], scores, q, ids)[0][:5] for q, ids in per_query.items()}
        recall_ndcg = compute_metrics(data.qrels, per_query, limit=limit)["nDCG@10"]
        for name, stages in PRESET_CANDIDATES.items():
            rankings, same, pairs_total = {}, 0, {}
            for qid, ids in per_query.items():
                ranking, pairs = replay(stages, scores, qid, ids)
                rankings[qid] = ranking
                same += set(ranking[:5]) == set(exact_top5[qid])
                for e, n in pairs.items():
                    pairs_total[e] = pairs_total.get(e, 0) + n
            n = len(per_query)
            ms = sum(1000 * p / n / speed[e] for e, p in pairs_total.items())
            rows.append(
                {
                    "dataset": data.name,
                    "limit": limit,
                    "preset": name,
                    "ndcg@10": round(compute_metrics(data.qrels, rankings, limit=limit)["nDCG@10"], 4),
                    "recall_ndcg@10": round(recall_ndcg, 4),
                    "same_top5_as_exact": round(same / n, 3),
                    "pairs_per_query": {e: round(p / n, 1) for e, p in pairs_total.items()},
                    "est_rerank_ms_per_query": round(ms, 1),
                }
            )
    return rows


def pick_default(rows: list[dict[str, Any]], tolerance: float = 0.005, depth: int = 20) -> str:
    """The fastest candidate at ``depth`` candidates, the default pipeline's recall depth (estimated stage-2 ms
    summed over the datasets), among those whose nDCG@10 is within ``tolerance`` of ``exact``'s on every dataset
    and limit measured; ``exact`` when none is. Without rows at ``depth``: the cost summed over every limit."""
    exact = {(r["dataset"], r["limit"]): r["ndcg@10"] for r in rows if r["preset"] == "exact"}
    at_depth = any(r["limit"] == depth for r in rows)
    cost: dict[str, float] = {}
    fails: set[str] = set()
    for r in rows:
        if r["limit"] == depth or not at_depth:
            cost[r["preset"]] = cost.get(r["preset"], 0.0) + r["est_rerank_ms_per_query"]
        if r["ndcg@10"] < exact[(r["dataset"], r["limit"])] - tolerance:
            fails.add(r["preset"])
    return min((name for name in cost if name not in fails), key=lambda name: cost[name])


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """One row per preset and limit: estimated ms/query and nDCG@10 (change against exact) on each dataset, and
    the share of queries whose top 5 equals exact's."""
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    by_key = {(r["dataset"], r["limit"], r["preset"]): r for r in rows}
    head = "| preset | limit | " + " | ".join(
        f"{d} est. ms/query | {d} nDCG@10 (vs exact) | {d} same top-5" for d in datasets
    )
    lines = [head + " |", "|" + "---|" * (2 + 3 * len(datasets))]
    for preset in PRESET_CANDIDATES:
        for limit in sorted({r["limit"] for r in rows}):
            cells = []
            for d in datasets:
                r, e = by_key.get((d, limit, preset)), by_key.get((d, limit, "exact"))
                if r is None or e is None:
                    cells += ["–", "–", "–"]
                    continue
                delta = r["ndcg@10"] - e["ndcg@10"]
                cells += [f"{r['est_rerank_ms_per_query']:.0f}", f"{r['ndcg@10']:.4f} ({delta:+.4f})",
                          f"{r['same_top5_as_exact']:.0%}"]  # fmt: skip
            lines.append(f"| `{preset}` | {limit} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scifact", required=True, help="BEIR SciFact folder (test split is used)")
    parser.add_argument("--model", default=os.environ.get("TWOSTAGE_RERANK_MODEL"), help="cross-encoder folder")
    parser.add_argument("--out", default="benchmarks/results/presets.json")
    parser.add_argument("--scores", default=str(Path(tempfile.gettempdir()) / "twostage-preset-scores.json"))
    parser.add_argument("--limits", default=",".join(map(str, LIMITS)))
    args = parser.parse_args()
    limits = tuple(int(x) for x in args.limits.split(","))
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    cpu_model = next((ln.split(":", 1)[1].strip() for ln in cpu.splitlines() if ln.startswith("Model name")), "?")
    domain_dir = python_docs_domain(Path(tempfile.mkdtemp(prefix="pydocs-beir-")) / "python-docs")
    rows, speeds = [], {}
    rerankers = {engine: CrossEncoderReranker(args.model, **options) for engine, options in ENGINES.items()}
    for data in (load_beir(args.scifact, "test"), load_beir(domain_dir, "test")):
        candidates = recall_candidates(data, limits)
        speed = probe_speed(data, candidates, rerankers)
        print(f"{data.name}: pairs/s on the probe {speed}", flush=True)
        scores = score_all(data, candidates, rerankers, Path(args.scores))
        speeds[data.name] = speed
        rows += evaluate_presets(data, candidates, scores, speed)
    default, fastest = pick_default(rows), pick_default(rows, tolerance=0.01)
    result = {"cpu": cpu_model, "pairs_per_s": speeds, "limits": list(limits), "default": default}
    result |= {"fastest_within_0.01": fastest, "rows": rows}
    Path(args.out).write_text(json.dumps(result, indent=1))
    table = markdown_table(rows)
    picks = (
        f"default (fastest at limit 20 of those within 0.005 of exact at every limit): {default}\n"
        f"the same within 0.01: {fastest}"
    )
    Path(args.out).with_suffix(".md").write_text(f"CPU: {cpu_model}\n\n{table}\n\n{picks}\n")
    print(f"CPU: {cpu_model}\n{table}\n{picks}")


if __name__ == "__main__":
    main()
