"""Crash safety of writes: SIGKILL `twostage ingest` part-way, run it again, and everything is there once."""

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
from time_limits import SUBPROCESS_TIMEOUT

REPO = Path(__file__).resolve().parents[1]
N = 3000
TOPICS = ["cardiology", "oncology", "neurology", "virology", "genetics"]


def write_passages(path: Path) -> dict[str, dict]:
    """N short passages with ids and metadata; returns id -> expected stored record."""
    expected = {}
    with open(path, "w", encoding="utf-8") as f:
        for i in range(N):
            topic = TOPICS[i % len(TOPICS)]
            record = {"id": f"p{i:04d}", "text": f"Passage {i} on {topic}: finding number {i * 7 % 101}.", "n": i}
            record["topic"] = topic
            f.write(json.dumps(record) + "\n")
            meta = {"source": str(path), "filename": path.name, "line": i + 1, "n": i, "topic": topic}
            expected[record["id"]] = {"text": record["text"], "metadata": meta}
    return expected


def test_sigkilled_ingest_resumes_and_stores_each_passage_once(tmp_path):
    data, db = tmp_path / "passages.jsonl", tmp_path / "db"
    expected = write_passages(data)
    exe = shutil.which("twostage")
    assert exe
    cmd = [exe, "ingest", str(data), "--collection", "kill-test", "--db", str(db)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}

    # First run: watch tqdm's "n/3000" on stderr and SIGKILL once a few batches are in, mid-way.
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    progress = [0]

    def watch():
        buf = b""
        while chunk := proc.stderr.read1(4096):
            buf = (buf + chunk)[-4096:]
            done = re.findall(rb"(\d+)/3000", buf)
            if done:
                progress[0] = int(done[-1])

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    deadline = time.monotonic() + SUBPROCESS_TIMEOUT
    while progress[0] < 512 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "ingest finished before it could be killed; make the corpus larger"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    watcher.join(10)
    killed_at = progress[0]
    assert 0 < killed_at < N

    # Second run: finishes the job without storing anything twice.
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
    assert rerun.returncode == 0, rerun.stderr
    counts = re.search(r"(\d+) passages added, (\d+) updated, (\d+) already", rerun.stdout)
    added, updated, present = map(int, counts.groups())
    assert updated == 0 and present >= 256 and added + present == N  # the killed run's batches were kept

    collection = chromadb.PersistentClient(path=str(db)).get_collection("kill-test", embedding_function=None)
    stored = collection.get(include=["documents", "metadatas"])
    assert collection.count() == N and sorted(stored["ids"]) == sorted(expected)
    for doc_id, text, meta in zip(stored["ids"], stored["documents"], stored["metadatas"], strict=True):
        assert {"text": text, "metadata": meta} == expected[doc_id], doc_id
    assert collection.metadata.get("twostage:version")  # the version stamp survived the kill too
