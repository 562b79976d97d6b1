"""Calibration with the real cross-encoder (slow tier): `twostage calibrate` on SciFact train queries, then `eval` on
test queries shows the calibrated scores' ECE below the raw scores'. A small BEIR folder (a few train and test
queries, their relevant documents and seeded distractors) keeps indexing and scoring to a few minutes; --limit 20
keeps about 1 candidate in 15 relevant, as on the whole corpus (with fewer candidates the raw scores happen to be
calibrated already)."""

from __future__ import annotations

import json
import os
import random
import subprocess
from pathlib import Path

import pytest


def _read(folder: Path, split: str) -> tuple[dict, dict, dict]:
    """(corpus {id: {"title", "text"}}, judged queries {id: text}, qrels {qid: {docid: rel}}) of a BEIR folder."""
    corpus = {}
    for line in (folder / "corpus.jsonl").read_text(encoding="utf-8").splitlines():
        d = json.loads(line)
        corpus[d["_id"]] = {"title": d.get("title", ""), "text": d["text"]}
    qrels: dict[str, dict[str, int]] = {}
    for line in (folder / "qrels" / f"{split}.tsv").read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if parts[0] not in ("query-id", "query_id"):
            qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    queries = {}
    for line in (folder / "queries.jsonl").read_text(encoding="utf-8").splitlines():
        d = json.loads(line)
        if d["_id"] in qrels:
            queries[d["_id"]] = d["text"]
    return corpus, queries, qrels


N_TRAIN, N_TEST, N_DOCS, LIMIT = 50, 30, 300, 20


@pytest.fixture(scope="module")
def small_beir(scifact_dir, tmp_path_factory) -> Path:
    """A BEIR folder with qrels/train.tsv and qrels/test.tsv over N_DOCS documents."""
    corpus, train_q, train_rel = _read(scifact_dir, "train")
    _, test_q, test_rel = _read(scifact_dir, "test")
    train = sorted(train_q, key=int)[:N_TRAIN]
    test = sorted(test_q, key=int)[:N_TEST]
    relevant = {d for q in train for d in train_rel[q]} | {d for q in test for d in test_rel[q]}
    others = sorted(set(corpus) - relevant)
    docs = sorted(relevant) + random.Random(7).sample(others, N_DOCS - len(relevant))
    out = tmp_path_factory.mktemp("small-scifact")
    (out / "qrels").mkdir()
    with open(out / "corpus.jsonl", "w") as f:
        for d in docs:
            f.write(json.dumps({"_id": d, **corpus[d]}) + "\n")
    with open(out / "queries.jsonl", "w") as f:
        for q in train:
            f.write(json.dumps({"_id": q, "text": train_q[q]}) + "\n")
        for q in test:
            f.write(json.dumps({"_id": q, "text": test_q[q]}) + "\n")
    for split, qids, rels in (("train", train, train_rel), ("test", test, test_rel)):
        lines = [f"{q}\t{d}\t{r}" for q in qids for d, r in rels[q].items()]
        (out / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(lines) + "\n")
    return out


@pytest.fixture(scope="module")
def model_copy(rerank_model_path, tmp_path_factory) -> Path:
    """The shared (read-only) model's files linked into a writable folder, so calibration.json goes beside them."""
    folder = tmp_path_factory.mktemp("ce-copy")
    for f in Path(rerank_model_path).iterdir():
        (folder / f.name).symlink_to(f)
    return folder


def _twostage(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = ["twostage", *args]  # PYTHONPATH (inherited) picks this tree
    return subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy(), timeout=1200)


@pytest.mark.timeout(1200)
def test_calibrate_then_eval_lowers_ece(small_beir, model_copy, tmp_path):
    db = str(tmp_path / "db")
    # int8: the same plumbing at about half the scoring time of fp32 (calibration fits whatever scores it is given)
    common = ["--recall", "bm25", "--limit", str(LIMIT), "--db", db, "--rerank-model", str(model_copy)]
    common += ["--rerank-backend", "onnx-int8"]
    done = _twostage("calibrate", str(small_beir), "--split", "train", *common, "--json", str(tmp_path / "cal.json"))
    assert done.returncode == 0, done.stderr
    cal_file = model_copy / "calibration.json"
    assert cal_file.is_file() and "calibration written to" in done.stdout
    saved = json.loads(cal_file.read_text())
    assert saved["fitted_on"]["split"] == "train" and saved["n_positive"] > 0 and saved["n_pairs"] > saved["n_positive"]

    from twostage_integrations import CrossEncoderReranker

    assert CrossEncoderReranker(str(model_copy)).score_kind == "ce_calibrated"
    assert CrossEncoderReranker(str(model_copy), calibration=False).score_kind == "ce_sigmoid"

    out = tmp_path / "eval.json"
    ran = _twostage(
        "eval", str(small_beir), "--split", "test", "--top-k", "5", *common, "--min-score", "0.5", "--json", str(out)
    )
    assert ran.returncode == 0, ran.stderr
    scores = json.loads(out.read_text())["scores"]
    assert scores["score_kind"] == "ce_calibrated"
    cal = scores["calibration"]
    assert cal["after"]["ece"] < cal["before"]["ece"], cal
    assert "ECE" in ran.stdout and "min_score 0.5" in ran.stdout
    kept = scores["min_score"]
    assert kept["threshold"]["results_per_query"] <= kept["top_k_only"]["results_per_query"]
    bad = _twostage("eval", str(small_beir), "--split", "test", "--top-k", "5", *common, "--min-score", "1.5")
    assert bad.returncode == 2 and "outside the range of ce_calibrated" in bad.stderr
