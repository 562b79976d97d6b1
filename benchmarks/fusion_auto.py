"""How well the label-free fusion-weight estimate (``fuse=rrf:auto``) predicts the labelled result.

For one BEIR folder: the labelled nDCG@10 of recall alone and of every fusion weight on the real queries, next to
the pseudo-query estimate of the same (twostage_integrations.evaluation.fusion_auto), every (query, passage) pair
scored once (CachedReranker). Raw numbers: benchmarks/results/fusion_auto_*.json; table: docs/evaluation.md.

    python benchmarks/fusion_auto.py SCIFACT_DIR MODEL --db DB --max-queries 100 --out scifact.json
    python benchmarks/fusion_auto.py --pydocs-beir /tmp/pydocs-beir   # build the second labelled set, then as above

The second set is the bundled Python docs (twostage_integrations/data/sample_corpus.jsonl): each docstring's
one-line summary (after "title: ", before the first blank line) is a query, its own passage with that summary
removed the one relevant document.
"""

import argparse
import json
import logging
import sys
import time
from pathlib import Path


def make_pydocs_beir(out: Path) -> None:
    src = Path(__file__).resolve().parents[1] / "twostage_integrations" / "data" / "sample_corpus.jsonl"
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    corpus, queries, qrels = [], [], []
    for line in src.read_text().splitlines():
        row = json.loads(line)
        head, _, rest = row["text"].partition("\n\n")
        summary = head.split(": ", 1)[1].strip() if head.startswith(row["title"] + ": ") else head.strip()
        rest = rest.strip()
        corpus.append({"_id": row["id"], "title": row["title"], "text": rest or summary})
        if rest and len(summary.split()) >= 3:
            queries.append({"_id": "q:" + row["id"], "text": summary})
            qrels.append(f"q:{row['id']}\t{row['id']}\t1")
    (out / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus))
    (out / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries))
    (out / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(qrels) + "\n")
    print(len(corpus), "docs,", len(queries), "queries")


def measure(a: argparse.Namespace) -> dict:
    from twostage_integrations.evaluation import CachedReranker, compute_metrics, index_corpus, load_beir
    from twostage_integrations.evaluation.fusion_auto import (
        GRID,
        estimate_from_runs,
        pseudo_queries,
        pseudo_recall,
        read_pool,
        run_pseudo_queries,
    )
    from twostage_integrations.recall.factory import recall_by_kind
    from twostage_integrations.rerank import CrossEncoderReranker
    from twostage_integrations.rerank.fusion import fuse_orders

    data = load_beir(a.data, "test", max_queries=a.max_queries)
    chroma = index_corpus(data, db=a.db, progress=False)
    recall = recall_by_kind(a.recall, chroma)
    ce = CachedReranker(CrossEncoderReranker(a.model, backend=a.backend))
    t0 = time.time()
    runs = {}
    for qid, text in data.queries.items():
        hits = recall.search(text, a.limit)
        runs[qid] = (hits, ce.rerank(text, hits, None))
    labelled_s = time.time() - t0

    def ndcg(rankings):
        return compute_metrics(data.qrels, rankings, limit=a.limit, k=10)["nDCG@10"]

    out = {"data": a.data, "n_queries": len(data.queries), "limit": a.limit, "recall": a.recall}
    out.update(backend=a.backend, labelled={"recall": ndcg({q: [h.id for h in r[0]] for q, r in runs.items()})})
    for m in ("rrf", "minmax"):
        out["labelled"][m] = {
            w: ndcg({q: [h.id for h in fuse_orders(r[0], r[1], None, weight=w, method=m)] for q, r in runs.items()})
            for w in GRID
        }
    t0 = time.time()
    pool = read_pool(chroma)
    titles = {i: str((md or {}).get("title") or "") for i, md in zip(pool["ids"], pool["metadatas"], strict=True)}
    queries = pseudo_queries(dict(zip(pool["ids"], pool["documents"], strict=True)), titles, sample=a.sample)
    with pseudo_recall(recall, pool, queries) as mirrored:
        pruns = run_pseudo_queries(mirrored, ce, queries, a.limit)
    out["pseudo"] = {m: estimate_from_runs(pruns, m).to_dict() for m in ("rrf", "minmax")}
    out.update(pseudo_n=len(queries), pool=len(pool["ids"]), pairs_scored=ce.pairs_scored)
    out.update(seconds_scoring=ce.seconds_scoring, labelled_seconds=labelled_s, pseudo_seconds=time.time() - t0)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", nargs="?")
    p.add_argument("model", nargs="?")
    p.add_argument("--pydocs-beir", type=Path, help="Only build the Python-docs BEIR folder here.")
    p.add_argument("--db")
    p.add_argument("--max-queries", type=int)
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--recall", default="hybrid")
    p.add_argument("--backend", default="onnx-int8")
    p.add_argument("--sample", type=int, default=150)
    p.add_argument("--out", type=Path)
    a = p.parse_args()
    if a.pydocs_beir:
        make_pydocs_beir(a.pydocs_beir)
        return
    if not (a.data and a.model and a.out):
        sys.exit("pass DATA MODEL --out FILE (or --pydocs-beir DIR)")
    logging.basicConfig(level=logging.INFO)
    out = measure(a)
    a.out.write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
