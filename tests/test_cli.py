"""The real `twostage` console script, end to end in subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from time_limits import SUBPROCESS_TIMEOUT

DOCS = {
    "notes.md": "# Cardiology notes\n\nAspirin reduces the risk of a second stroke in adults.\n\n"
    "Statins lower LDL cholesterol and cut heart attacks.\n",
    "bones.txt": "Vitamin D deficiency is linked to low bone mineral density in older women.",
}


@pytest.fixture(scope="module")
def env(tmp_path_factory, rerank_model_path):
    home = tmp_path_factory.mktemp("cli")
    e = {**os.environ, "TWOSTAGE_RERANK_MODEL": rerank_model_path, "TWOSTAGE_DB": str(home / "db"), "COLUMNS": "200"}
    return e, home


def twostage(env, *args, check=True):
    exe = shutil.which("twostage")
    assert exe, "console script `twostage` is not installed (pip install -e .)"
    proc = subprocess.run([exe, *args], env=env, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
    if check and proc.returncode != 0:
        raise AssertionError(f"twostage {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return proc


@pytest.fixture(scope="module")
def ingested(env, scifact_subset):
    e, home = env
    for name, text in DOCS.items():
        (home / name).write_text(text)
    doc_ids, texts, metas, _, _ = scifact_subset
    with open(home / "scifact.jsonl", "w") as f:
        for i in range(40):
            f.write(json.dumps({"_id": doc_ids[i], "text": texts[i], "title": metas[i]["title"]}) + "\n")
    first = twostage(
        e, "ingest", str(home / "notes.md"), str(home / "bones.txt"), str(home / "scifact.jsonl"), "-c", "clitest"
    )
    return e, home, first


def test_ingest_reports_added_then_already_present(ingested):
    e, home, first = ingested
    assert "42 passages added" in first.stdout and "0 already present" in first.stdout
    again = twostage(e, "ingest", str(home), "-c", "clitest")
    assert "0 passages added" in again.stdout and "42 already present" in again.stdout


def test_ingest_shows_its_progress_bar(ingested):
    _, _, first = ingested
    assert "adding to clitest" in first.stderr and "42/42" in first.stderr  # the Python API's is off by default


def test_query_table_shows_ranks_and_timings(ingested):
    e, _, _ = ingested
    out = twostage(e, "query", "does aspirin prevent stroke?", "-c", "clitest", "--limit", "10", "--top-k", "3").stdout
    assert "recall →" in out and "rerank" in out and "ms · rerank" in out
    assert "Aspirin reduces the risk" in out


def test_query_json_reranked(ingested):
    e, _, _ = ingested
    proc = twostage(e, "query", "does aspirin prevent stroke?", "-c", "clitest", "--top-k", "4", "--json")
    assert "Loading weights" not in proc.stderr  # library progress bars are hidden unless --verbose
    payload = json.loads(proc.stdout)
    assert payload["score_kind"] == "ce_sigmoid"
    hits = payload["hits"]
    assert len(hits) == 4 and payload["limit"] == 20
    assert [h["rerank_rank"] for h in hits] == [1, 2, 3, 4]
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert "Aspirin" in hits[0]["text"]
    assert payload["timings"]["rerank_s"] > 0 and payload["rerank_model"] == e["TWOSTAGE_RERANK_MODEL"]


def test_query_no_rerank_and_filter(ingested):
    e, home, _ = ingested
    out = twostage(
        e, "query", "bone density", "-c", "clitest", "--no-rerank", "--json", "--num-candidates", "50"
    ).stdout
    hits = json.loads(out)["hits"]
    assert all(h["rerank_rank"] is None for h in hits)
    assert [h["recall_rank"] for h in hits] == list(range(1, len(hits) + 1))
    source = str(home / "bones.txt")
    out = twostage(e, "query", "bone density", "-c", "clitest", "--json", "--filter", json.dumps({"source": source}))
    hits = json.loads(out.stdout)["hits"]
    assert [h["metadata"]["source"] for h in hits] == [source]
    # the bare file name, as people type it, is stored too; the path as typed is not a file name
    by_name = twostage(
        e, "query", "bone density", "-c", "clitest", "--no-rerank", "--json", "--filter", '{"filename": "bones.txt"}'
    )
    assert [h["metadata"]["source"] for h in json.loads(by_name.stdout)["hits"]] == [source]
    missed = twostage(e, "query", "bone density", "-c", "clitest", "--no-rerank", "--filter", '{"source": "bones.txt"}')
    assert "no passage matches --filter" in missed.stderr and '"filename"' in missed.stderr


@pytest.mark.parametrize(
    "args, needle",
    [
        (["query", "x", "-c", "no-such-collection"], "twostage ingest"),
        (["query", "  ", "-c", "clitest"], "query is empty"),
        (["query", "x", "-c", "clitest", "--limit", "3", "--top-k", "5"], "top_k (5) is larger than limit (3)"),
        (["query", "x", "-c", "clitest", "--filter", "{bad"], "--filter is not valid JSON"),
        (["query", "x", "-c", "clitest", "--rerank-model", "/no/such/model"], "/no/such/model"),
        (["ingest", "/no/such/file.txt", "-c", "clitest"], "no such file"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(ingested, args, needle):
    e, _, _ = ingested
    proc = twostage(e, *args, check=False)
    assert proc.returncode == 2
    assert needle in proc.stderr and "Traceback" not in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if line.startswith("error:")]) == 1


def test_unloadable_default_model_names_the_fixes(ingested):
    e, _, _ = ingested
    offline = {k: v for k, v in e.items() if k != "TWOSTAGE_RERANK_MODEL"}
    offline["HF_HUB_OFFLINE"] = "1"
    offline["HF_HOME"] = e["TWOSTAGE_DB"] + "-empty-hf-cache"  # a cache without the default model
    for args in (["query", "aspirin", "-c", "clitest"], ["demo"]):
        proc = twostage(offline, *args, check=False)
        assert proc.returncode == 2, proc.stderr
        error_lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(error_lines) == 1 and "Traceback" not in proc.stderr
        for needle in ("TWOSTAGE_RERANK_MODEL", "--rerank-model", "--no-rerank"):
            assert needle in error_lines[0]


def test_demo_shows_recall_next_to_rerank(env):
    e, home = env
    proc = twostage(e, "demo", "--db", str(home / "demo-db"), "--top-k", "3")
    out = proc.stdout
    assert "458 added" in out
    assert out.count("after rerank") == 6 and "stage 1 only" in out
    assert "how do I run a shell command" in out
    again = twostage(e, "demo", "--db", str(home / "demo-db"), "-q", "read a CSV file", "--top-k", "3").stdout
    assert "458 already there" in again and out.count("read a CSV file") == 0 and "read a CSV file" in again
