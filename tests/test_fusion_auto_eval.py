"""`twostage eval --fusion-weight auto` with the real cross-encoder on a SciFact subset: the weight is chosen on
pseudo-queries of the corpus (no labels), and the estimate table and the pick are printed and in --json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from time_limits import SUBPROCESS_TIMEOUT

from twostage_integrations.evaluation.fusion_auto import DEFAULT_SAMPLE, GRID, MIN_QUERIES

N_DOCS = 200  # pseudo-queries come from these: up to 150 of them, 10 candidates each


@pytest.fixture(scope="module")
def small_scifact(scifact_subset, tmp_path_factory) -> Path:
    """A BEIR folder: the first 5 subset queries, their relevant abstracts and distractors, 200 abstracts."""
    doc_ids, texts, metas, queries, qrels = scifact_subset
    qids = list(queries)[:5]
    keep = set(doc_ids[:N_DOCS]) | {d for q in qids for d in qrels[q]}
    folder = tmp_path_factory.mktemp("beir") / "scifact-small"
    (folder / "qrels").mkdir(parents=True)
    rows = []
    for doc_id, text, meta in zip(doc_ids, texts, metas, strict=True):
        if doc_id in keep:
            title = meta["title"]
            rows.append({"_id": doc_id, "title": title, "text": text[len(title) + 2 :]})
    (folder / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": queries[q]}) + "\n" for q in qids))
    pairs = [f"{q}\t{d}\t{rel}" for q in qids for d, rel in qrels[q].items()]
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(pairs) + "\n")
    return folder


def test_eval_fusion_weight_auto_reports_the_estimate_and_the_pick(small_scifact, rerank_model_path, tmp_path):
    out = tmp_path / "eval.json"
    cmd = [sys.executable, "-c", "from twostage_integrations.cli import app; app()", "eval", str(small_scifact)]
    cmd += ["--recall", "bm25", "--limit", "10", "--rerank-model", rerank_model_path, "--rerank-backend", "onnx-int8"]
    cmd += ["--fusion-weight", "auto", "--db", str(tmp_path / "db"), "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(out.read_text())
    assert "fuse=rrf:auto" in payload["pipeline"]
    estimate = payload["config"]["fusion_auto"]
    assert estimate["fallback"] is None and MIN_QUERIES <= estimate["n_queries"] <= DEFAULT_SAMPLE
    table = {row["weight"]: row["ndcg"] for row in estimate["ndcg"]}
    assert sorted(table) == sorted(GRID) and all(0.0 <= v <= 1.0 for v in table.values())
    # the pick is the best weight of the reported table, the smallest one on a tie
    assert estimate["weight"] == min(w for w, v in table.items() if v == max(table.values()))
    assert table[0.0] == pytest.approx(estimate["recall_ndcg"])  # weight 0 is recall's own order
    # the reranker that ran is fused with the picked weight, and the table was printed
    assert payload["stages"][-1]["name"].endswith(f"+rrf({estimate['weight']:g})")
    assert "fusion weight auto (rrf)" in proc.stdout and "<- pick" in proc.stdout
