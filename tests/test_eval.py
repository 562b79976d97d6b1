"""`twostage eval`: metric sanity by hand, and end to end on a SciFact subset (API and CLI)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from time_limits import SUBPROCESS_TIMEOUT

from twostage_integrations.errors import InvalidDocumentError
from twostage_integrations.evaluation import compute_metrics, evaluate, load_beir

N_QUERIES = 30  # of the fixture's 60: enough signal, small enough for a quick run
N_DOCS = 200


def _write_beir(folder: Path, corpus: dict[str, tuple[str, str]], queries: dict[str, str], qrels: dict) -> Path:
    (folder / "qrels").mkdir(parents=True)
    with open(folder / "corpus.jsonl", "w") as f:
        for doc_id, (title, text) in corpus.items():
            f.write(json.dumps({"_id": doc_id, "title": title, "text": text}) + "\n")
    with open(folder / "queries.jsonl", "w") as f:
        for qid, text in queries.items():
            f.write(json.dumps({"_id": qid, "text": text}) + "\n")
    with open(folder / "qrels" / "test.tsv", "w") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for qid, docs in qrels.items():
            for doc_id, rel in docs.items():
                f.write(f"{qid}\t{doc_id}\t{rel}\n")
    return folder


# -- metrics on a hand-made dataset ---------------------------------------------------------------------------
def test_metrics_match_hand_computation(tmp_path):
    corpus = {d: ("", f"document {d}") for d in ("d1", "d2", "d3", "d4", "d5")}
    queries = {"q1": "first", "q2": "second", "q3": "third"}
    qrels = {"q1": {"d1": 1}, "q2": {"d1": 2, "d2": 1}, "q3": {"d5": 1}}
    data = load_beir(_write_beir(tmp_path / "tiny", corpus, queries, qrels), "test")
    assert data.qrels == qrels and list(data.queries) == ["q1", "q2", "q3"]  # header line skipped

    rankings = {"q1": ["d2", "d1", "d3"], "q2": ["d2", "d3", "d1"]}  # q3 retrieved nothing: counts as 0
    m = compute_metrics(data.qrels, rankings, limit=3, k=2)

    # nDCG with linear gains (trec_eval): DCG = sum rel_i / log2(i + 1).
    ndcg_q1_at2 = (1 / math.log2(3)) / 1.0
    ndcg_q2_at2 = (1 / 1.0 + 0 / math.log2(3)) / (2 / 1.0 + 1 / math.log2(3))
    assert m["nDCG@2"] == pytest.approx((ndcg_q1_at2 + ndcg_q2_at2 + 0) / 3, abs=1e-6)
    # Recall@2: q1 1/1, q2 1/2; Recall@3: q1 1, q2 2/2.
    assert m["Recall@2"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert m["Recall@3"] == pytest.approx((1 + 1 + 0) / 3)
    # MRR@2: first relevant at rank 2 (q1) and rank 1 (q2).
    assert m["MRR@2"] == pytest.approx((0.5 + 1 + 0) / 3)
    # AP: q1 = (1/2) / 1; q2 = (1/1 + 2/3) / 2.
    assert m["MAP@100"] == pytest.approx((0.5 + (1 + 2 / 3) / 2 + 0) / 3)


def test_load_beir_names_the_missing_split(tmp_path):
    folder = _write_beir(tmp_path / "tiny", {"d1": ("", "x")}, {"q1": "y"}, {"q1": {"d1": 1}})
    with pytest.raises(InvalidDocumentError, match=r"dev\.tsv not found.*available splits: test"):
        load_beir(folder, "dev")


# -- end to end on a SciFact subset -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def subset_dir(scifact_subset, scifact_dir, tmp_path_factory):
    """The first N_QUERIES of the SciFact subset, their relevant abstracts and distractors from the subset
    (N_DOCS in all), written as a BEIR folder with the real titles and abstracts."""
    doc_ids, _, _, queries, qrels = scifact_subset
    qids = list(queries)[:N_QUERIES]
    relevant = [d for d in doc_ids if any(d in qrels[q] for q in qids)]
    keep = relevant + [d for d in doc_ids if d not in relevant][: N_DOCS - len(relevant)]
    with open(scifact_dir / "corpus.jsonl", encoding="utf-8") as f:
        rows = {r["_id"]: r for r in map(json.loads, f)}
    corpus = {d: (rows[d]["title"], rows[d]["text"]) for d in keep}
    queries, qrels = {q: queries[q] for q in qids}, {q: qrels[q] for q in qids}
    return _write_beir(tmp_path_factory.mktemp("beir") / "scifact-subset", corpus, queries, qrels)


@pytest.fixture(scope="module")
def eval_db(tmp_path_factory):
    return tmp_path_factory.mktemp("evaldb")


@pytest.fixture(scope="module")
def api_report(subset_dir, eval_db, embedder, cross_encoder):
    return evaluate(
        subset_dir,
        recall="dense",
        limit=15,
        reranker=cross_encoder,
        max_queries=N_QUERIES,
        db=eval_db,
        embedding_model=embedder,
        progress=False,
    )


def test_eval_api_reports_recall_and_rerank(api_report):
    recall, rerank = api_report.stages
    assert api_report.n_queries == N_QUERIES and api_report.n_docs == N_DOCS
    assert recall.name == "recall (dense)" and recall.mean_out == 15 and rerank.mean_in == 15
    for stage in (recall, rerank):
        assert set(stage.metrics) == {"nDCG@10", "Recall@10", "Recall@15", "MRR@10", "MAP@100"}
        assert all(0.0 <= v <= 1.0 for v in stage.metrics.values())
        assert stage.seconds > 0 and stage.qps > 0
    # The last stage reorders all candidates, so recall at the full depth cannot change...
    assert rerank.metrics["Recall@15"] == pytest.approx(recall.metrics["Recall@15"])
    # ...while the in-domain cross-encoder (trained on SciFact train) improves the top of the list.
    assert rerank.metrics["nDCG@10"] > recall.metrics["nDCG@10"]


def test_eval_cli_json_matches_api_and_reuses_the_index(subset_dir, eval_db, api_report, tmp_path):
    out = tmp_path / "eval.json"
    cmd = [sys.executable, "-c", "from twostage_integrations.cli import app; app()", "eval", str(subset_dir)]
    cmd += ["--recall", "dense", "--limit", "15", "--no-rerank", "--max-queries", str(N_QUERIES)]
    cmd += ["--db", str(eval_db), "--json", str(out), "--plot", str(tmp_path / "limits.png"), "--plot-limits", "5,15"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    assert "nDCG@10" in proc.stdout and "MAP@100" in proc.stdout
    payload = json.loads(out.read_text())
    assert [r["limit"] for r in payload["by_limit"]] == [5, 15]  # --plot ran one evaluation per limit...
    assert (tmp_path / "limits.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # ...and drew them
    assert payload["n_queries"] == N_QUERIES and len(payload["stages"]) == 1
    # Same collection, same queries: the CLI's dense recall scores exactly what the API measured.
    assert payload["stages"][0]["metrics"] == pytest.approx(api_report.stages[0].metrics)
    assert "adding to" not in proc.stderr  # the cached collection was complete: nothing re-embedded


def test_eval_cli_bad_folder_is_one_clear_error(tmp_path):
    cmd = [sys.executable, "-c", "from twostage_integrations.cli import app; app()", "eval", str(tmp_path)]
    proc = subprocess.run(cmd + ["--no-rerank"], capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "corpus.jsonl" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_eval_hybrid_bm25_and_plot(subset_dir, eval_db, embedder, tmp_path):
    from twostage_integrations.evaluation import evaluate_limits, plot_limits

    reports = {
        kind: evaluate(
            subset_dir,
            recall=kind,
            limit=20,
            max_queries=N_QUERIES,
            db=eval_db,
            embedding_model=embedder,
            progress=False,
        )
        for kind in ("dense", "bm25", "hybrid")
    }
    recall_at = {kind: r.stages[0].metrics["Recall@20"] for kind, r in reports.items()}
    # Fusing two different arms recalls at least as much as the weaker of them.
    assert recall_at["hybrid"] >= min(recall_at["dense"], recall_at["bm25"])
    by_limit = evaluate_limits(
        subset_dir, [5, 10], recall="bm25", max_queries=N_QUERIES, db=eval_db, embedding_model=embedder, progress=False
    )
    assert [r.limit for r in by_limit] == [5, 10]
    assert by_limit[0].stages[0].metrics["Recall@5"] <= by_limit[1].stages[0].metrics["Recall@10"]
    png = plot_limits(by_limit, tmp_path / "limits.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.mark.parametrize(
    "name, shown",
    [
        ("/work/models/minilm-ce", "minilm-ce"),
        ("../shared/models/minilm-ce+rrf(0.9)", "minilm-ce+rrf(0.9)"),
        ("/a/tiny[30] → /b/ce[5]", "tiny[30] → ce[5]"),
        ("cross-encoder/ms-marco-MiniLM-L-6-v2", "cross-encoder/ms-marco-MiniLM-L-6-v2"),  # hub ids stay whole
        ("rerank-v3.5", "rerank-v3.5"),
    ],
)
def test_stage_names_shorten_local_model_paths_for_display(name, shown):
    from twostage_integrations.evaluation.report import display_name

    assert display_name(name) == shown
