"""Every bad CLI input: a non-zero exit, exactly one ``error:`` line, no traceback.

Runs the real ``twostage`` console script in subprocesses (PYTHONPATH set to this checkout), all cases at once
in a small pool so the module stays fast; each case is then its own parametrised test.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from time_limits import SUBPROCESS_TIMEOUT

from twostage_integrations import ChromaRecall

REPO = Path(__file__).resolve().parents[1]
SHIM = 'raise ModuleNotFoundError("No module named {0!r}", name={0!r})\n'  # what a missing package raises


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cases(db: Path, tmp: Path, scifact: Path, port: int) -> dict[str, tuple[list[str], dict, int, str]]:
    """id -> (argv, extra env, exit code, text the error line must contain)."""
    q = ["query", "aspirin", "-c", "cli-errors", "--db", str(db), "--no-rerank"]
    no_extra = {"PYTHONPATH": f"{tmp / 'no-extras'}{os.pathsep}{REPO}"}
    return {
        "filter-unknown-operator": ([*q, "--filter", '{"source": {"$bad": 1}}'], {}, 2, "invalid where filter"),
        "filter-gt-on-a-string": ([*q, "--filter", '{"passage": {"$gt": "a"}}'], {}, 2, "need numbers"),
        "filter-list-value": ([*q, "--filter", '{"source": ["a"]}'], {}, 2, "a valid filter looks like"),
        "filter-not-json": ([*q, "--filter", "{source"], {}, 2, "not valid JSON"),
        "db-under-a-file": (["query", "x", "-c", "abc", "--db", str(tmp / "a-file" / "db")], {}, 2, "Chroma folder"),
        "db-corrupted": (["query", "x", "-c", "abc", "--db", str(tmp / "corrupt")], {}, 2, "not corrupted"),
        "missing-collection": (["query", "x", "-c", "never-made", "--db", str(db)], {}, 2, "twostage ingest"),
        # a read of a folder without a database names the folder it looked in (and creates nothing there)
        "query-new-folder": (["query", "x", "-c", "mine", "--db", str(tmp / "new" / "db")], {}, 2, str(tmp / "new")),
        "query-new-folder-hybrid": (
            ["query", "x", "-c", "mine", "--db", str(tmp / "new-hybrid" / "db"), "--recall", "hybrid"],
            {},
            2,
            f"twostage ingest PATH -c mine --db {tmp / 'new-hybrid' / 'db'}",
        ),
        "query-new-default-db": (["query", "x", "-c", "mine"], {"TWOSTAGE_DB": str(tmp / "new-env")}, 2, "new-env"),
        "limit-zero": ([*q, "--limit", "0"], {}, 2, "limit must be >= 1"),
        "top-k-above-limit": ([*q, "--limit", "3", "--top-k", "5"], {}, 2, "top_k (5) is larger than limit (3)"),
        "model-path-missing": (
            ["query", "x", "-c", "cli-errors", "--db", str(db), "--rerank-model", str(tmp / "no-such-model")],
            {},
            2,
            "no-such-model",
        ),
        "server-not-running": (
            ["query", "x", "-c", "cli-errors", "--host", "127.0.0.1", "--port", str(port)],
            {},
            2,
            f"127.0.0.1:{port}",
        ),
        "ingest-missing-file": (["ingest", str(tmp / "nope.md"), "-c", "abc", "--db", str(db)], {}, 2, "nope.md"),
        "eval-without-eval-extra": (
            ["eval", str(scifact), "--no-rerank", "--db", str(tmp / "eval-db")],
            no_extra,
            2,
            'pip install "twostage-integrations[eval]"',
        ),
        "bm25-without-bm25s": ([*q, "--recall", "bm25"], no_extra, 2, 'pip install "twostage-integrations[eval]"'),
    }


@pytest.fixture(scope="module")
def results(tmp_path_factory, embedder, scifact_dir):
    tmp = tmp_path_factory.mktemp("cli-errors")
    db = tmp / "db"
    recall = ChromaRecall("cli-errors", path=db, embedding_model=embedder, progress=False)
    texts = ["Aspirin lowers the risk of stroke.", "Statins lower cholesterol."]
    recall.add_texts(texts, metadatas=[{"source": "a"}] * 2)
    (tmp / "a-file").write_text("not a folder")
    (tmp / "corrupt").mkdir()
    (tmp / "corrupt" / "chroma.sqlite3").write_bytes(b"this is not sqlite " * 500)
    for module in ("ir_measures", "bm25s"):  # simulate an install without the eval extra
        (tmp / "no-extras" / module).mkdir(parents=True)
        (tmp / "no-extras" / module / "__init__.py").write_text(SHIM.format(module))
    exe = shutil.which("twostage")
    assert exe, "the twostage console script is not installed"
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    env.pop("TWOSTAGE_DEBUG", None)
    todo = cases(db, tmp, scifact_dir, free_port())

    def run(item):
        name, (argv, extra, _, _) = item
        proc = subprocess.run(
            [exe, *argv], env={**env, **extra}, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT
        )
        return name, proc

    with ThreadPoolExecutor(max_workers=4) as pool:
        done = dict(pool.map(run, todo.items()))
    return todo, done, tmp


@pytest.mark.parametrize("name", list(cases(Path("db"), Path("tmp"), Path("scifact"), 1)))
def test_bad_input_gives_one_error_line(results, name):
    todo, done, _ = results
    _, _, code, expected = todo[name]
    proc = done[name]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == code, proc.stderr
    assert len(errors) == 1, proc.stderr
    assert expected in errors[0], errors[0]
    assert "Traceback" not in proc.stderr + proc.stdout


def test_missing_extra_fails_before_any_indexing(results):
    _, _, tmp = results
    assert not (tmp / "eval-db").exists()  # eval stopped before creating (let alone filling) its database


def test_reads_create_no_database(results):
    _, _, tmp = results
    for folder in ("new", "new-hybrid", "new-env"):
        assert not (tmp / folder).exists(), folder  # the queries above failed without leaving a database behind


def test_debug_shows_the_traceback(results):
    _, _, tmp = results
    cli = [sys.executable, "-c", "from twostage_integrations.cli import app; app()"]
    argv = [*cli, "--debug", "query", "x", "-c", "abc"]
    proc = subprocess.run(
        [*argv, "--db", str(tmp / "a-file" / "db")],
        env={**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "StorageError" in proc.stderr


def run_serve(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("twostage")
    cmd = [exe] if exe else [sys.executable, "-c", "from twostage_integrations.cli import app; app()"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    env.pop("TWOSTAGE_DEBUG", None)
    # Generous timeout for a busy machine; the fixed command never gets near it (it loads no model).
    return subprocess.run([*cmd, "serve", *args], env=env, capture_output=True, text=True, timeout=300)


def test_serve_on_a_taken_port_exits_2_without_loading_the_model(rerank_model_path):
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        proc = run_serve("--port", str(port), "--model", rerank_model_path)
    out = proc.stdout + proc.stderr
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2, out
    assert len(errors) == 1 and f"127.0.0.1:{port}" in errors[0] and "--port" in errors[0], out
    # The error is all it printed: no "serving ... at", no model load and no "reranker ... ready" log line.
    assert out.splitlines() == errors and "Errno" not in out, out


def test_serve_with_a_missing_model_folder_fails_before_serving(tmp_path):
    proc = run_serve("--port", str(free_port()), "--model", str(tmp_path / "no-such-model"))
    out = proc.stdout + proc.stderr
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2, out
    assert len(errors) == 1 and "no-such-model" in errors[0], out
    assert out.splitlines() == errors, out  # nothing else: no "serving ... at" first
