"""`twostage eval --long-docs` on the real model and SciFact (12 queries over the 500-abstract test subset, so the
corpus indexes in seconds): windowed scoring runs through the CLI
for both aggregations, reports its windows as the pairs scored (more than the first-window run's), and writes
its nDCG@10 to the --json file."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

N_QUERIES = 12  # enough for windows to outnumber passages and an nDCG; each run scores ~3x their pairs


def _eval(scifact_dir, rerank_model_path, db, out, long_docs: str) -> dict:
    env = {**os.environ, "TWOSTAGE_RERANK_MODEL": rerank_model_path, "HF_HUB_OFFLINE": "1"}
    args = ["twostage", "eval", str(scifact_dir), "--recall", "bm25", "--limit", "10", "--max-queries", str(N_QUERIES)]
    args += ["--rerank-backend", "onnx-int8", "--long-docs", long_docs, "--db", str(db), "--json", str(out)]
    done = subprocess.run(args, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    if long_docs != "first":
        assert f"long_docs={long_docs} (pairs are windows)" in done.stdout
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def subset_beir(scifact_subset, tmp_path_factory):
    """The conftest subset (500 abstracts, their real titles) as a BEIR folder with its first N_QUERIES queries."""
    doc_ids, texts, _, queries, qrels = scifact_subset
    out = tmp_path_factory.mktemp("long-docs-beir")
    (out / "qrels").mkdir()
    rows = [{"_id": d, "title": "", "text": t} for d, t in zip(doc_ids, texts, strict=True)]  # t: "title. text"
    (out / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    qids = list(queries)[:N_QUERIES]
    (out / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": queries[q]}) + "\n" for q in qids))
    lines = [f"{q}\t{d}\t{r}" for q in qids for d, r in qrels[q].items()]
    (out / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(lines) + "\n")
    return out


def test_eval_reports_both_aggregations(subset_beir, rerank_model_path, tmp_path):
    runs = {
        m: _eval(subset_beir, rerank_model_path, tmp_path / "db", tmp_path / f"{m}.json", m)
        for m in ("first", "max", "top2mean")
    }
    engines = {m: r["rerank_engines"][0] for m, r in runs.items()}
    assert {m: e["long_docs"] for m, e in engines.items()} == {m: m for m in runs}
    assert "long_docs=max" in runs["max"]["pipeline"] and "long_docs=top2mean" in runs["top2mean"]["pipeline"]
    # the same windows for both aggregations, more pairs than one per passage
    assert engines["max"]["pairs"] == engines["top2mean"]["pairs"] > engines["first"]["pairs"]
    assert engines["max"]["truncated"] == 0
    for run in runs.values():
        ndcg = [v for k, v in run["stages"][-1]["metrics"].items() if k.lower().startswith("ndcg")]
        assert ndcg and 0.0 < ndcg[0] <= 1.0
