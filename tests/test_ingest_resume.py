"""Crash safety of writes: streaming `twostage ingest` at scale, in real subprocesses with the real embedder,
SIGKILLed at about half of 20,000 passages, run again: every passage is stored exactly once with its text and
metadata, the second run embedded only the missing, and the collection's version stamp survived."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import chromadb
from chromadb.api.client import SharedSystemClient
from time_limits import SUBPROCESS_TIMEOUT

REPO = Path(__file__).resolve().parents[1]
N = int(os.environ.get("TWOSTAGE_TEST_RESUME_N", "20000"))  # smaller only to try the test on a loaded machine
TOPICS = ["cardiology", "oncology", "neurology", "virology", "genetics"]


def write_short_passages(path: Path) -> dict[str, dict]:
    """N short passages with ids and metadata; returns id -> the record `ingest` must store."""
    expected = {}
    with open(path, "w", encoding="utf-8") as f:
        for i in range(N):
            record = {"id": f"n{i:05d}", "text": f"Note {i} on {TOPICS[i % 5]}: result {i * 7 % 101}.", "n": i}
            record["topic"] = TOPICS[i % 5]
            f.write(json.dumps(record) + "\n")
            meta = {"source": str(path), "filename": path.name, "line": i + 1, "n": i, "topic": record["topic"]}
            expected[record["id"]] = {"text": record["text"], "metadata": meta}
    return expected


def run_until_half_then_kill(cmd: list[str], env: dict[str, str]) -> int:
    """Start ``cmd``, SIGKILL it once its bar shows at least N/2 passages stored; return the last count seen."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    progress = [0]

    def watch():
        buf = b""
        while chunk := proc.stderr.read1(4096):
            buf = (buf + chunk)[-4096:]
            done = re.findall(rb"(\d+)/" + str(N).encode(), buf)
            if done:
                progress[0] = int(done[-1])

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    deadline = time.monotonic() + SUBPROCESS_TIMEOUT
    while progress[0] < N // 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "ingest finished (or died) before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    watcher.join(10)
    return progress[0]


def stored_count(db: Path) -> int:
    SharedSystemClient.clear_system_cache()
    return chromadb.PersistentClient(path=str(db)).get_collection("resume-20k", embedding_function=None).count()


def test_sigkilled_streaming_ingest_resumes_embedding_only_the_missing(tmp_path):
    data, db = tmp_path / "notes.jsonl", tmp_path / "db"
    expected = write_short_passages(data)
    exe = shutil.which("twostage")
    assert exe
    cmd = [exe, "ingest", str(data), "--collection", "resume-20k", "--db", str(db), "--batch-size", "256"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}

    shown = run_until_half_then_kill(cmd, env)
    stored_before = stored_count(db)
    assert N // 2 <= shown <= stored_before < N  # what the bar showed was stored (and maybe one batch more)

    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    embedded = int(re.search(r"embedded (\d+) passages", rerun.stderr).group(1))
    added, updated, present = map(
        int, re.search(r"(\d+) passages added, (\d+) updated, (\d+) already", rerun.stdout).groups()
    )
    assert embedded == added == N - stored_before  # only the missing were embedded
    assert (updated, present) == (0, stored_before)

    SharedSystemClient.clear_system_cache()  # read what the rerun wrote, not this process's cached view
    collection = chromadb.PersistentClient(path=str(db)).get_collection("resume-20k", embedding_function=None)
    stored = collection.get(include=["documents", "metadatas"])
    assert collection.count() == N and len(set(stored["ids"])) == N
    rows = zip(stored["ids"], stored["documents"], stored["metadatas"], strict=True)
    assert {i: {"text": t, "metadata": m} for i, t, m in rows} == expected
    assert collection.metadata.get("twostage:version")  # the version stamp survived the kill too
