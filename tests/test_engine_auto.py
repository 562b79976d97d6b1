"""``backend="auto"`` on the real cross-encoder: it times the engines once, caches the pick, and a second process
reuses the pick without timing (and, when the pick is ONNX, without importing torch).

The cache is the session's (conftest sets ``TWOSTAGE_CACHE_DIR``; subprocesses inherit it). No timing assertions:
which engine wins depends on the machine; the tests check that a pick is made, kept and reused.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from twostage_integrations.rerank import autopick
from twostage_integrations.rerank.cross_encoder import CrossEncoderReranker

pytest.importorskip("onnxruntime")

MAX_LENGTH = 160  # a limit no other test uses: this test's pick has its own cache entry


def _second_process(model: str) -> tuple[list[str], str]:
    """A fresh interpreter builds the same reranker with INFO logs on; returns (its stdout lines, its stderr)."""
    code = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')\n"
        "from twostage_integrations import CrossEncoderReranker\n"
        f"ce = CrossEncoderReranker({model!r}, backend='auto', max_length={MAX_LENGTH})\n"
        "print('PICK', ce.backend, ce.engine_pick.source)\n"
        "print('SCORES', ce.score('aspirin stroke', ['aspirin lowers the risk of stroke', 'bananas are yellow']))\n"
        "print('TORCH', 'torch' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TWOSTAGE_RERANK_BACKEND"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines(), proc.stderr


def test_auto_picks_caches_and_a_second_process_reuses_the_pick(rerank_model_path, caplog):
    with autopick.retiming(), caplog.at_level("INFO", logger=autopick.__name__):  # time now, whatever is cached
        ce = CrossEncoderReranker(rerank_model_path, backend="auto", max_length=MAX_LENGTH)
    pick = ce.engine_pick
    assert pick is not None and pick.source == "timed" and ce.backend == pick.backend in ("onnx", "torch")
    assert set(pick.pairs_per_s) == {"onnx", "torch"} and all(v > 0 for v in pick.pairs_per_s.values())
    logged = [r.getMessage() for r in caplog.records]
    assert any(f"rerank engine {ce.backend} for" in line and "(timed" in line for line in logged)
    scores = ce.score("aspirin stroke", ["aspirin lowers the risk of stroke", "bananas are yellow"])
    assert scores[0] > scores[1]

    picks_file = autopick.picks_file()
    entries = [e for e in autopick.read_picks(picks_file).values() if e["key"] == pick.key]
    assert len(entries) == 1 and entries[0]["model"] == ce.name
    before = picks_file.stat().st_mtime_ns

    lines, stderr = _second_process(rerank_model_path)
    # the process that timed had torch loaded; a torch-free one may prefer ONNX within the margin
    expected = autopick.decide(pick.pairs_per_s, torch_loaded=False)
    assert f"PICK {expected} cache" in lines
    assert "(cached pick on this machine" in stderr and "(timed on this machine" not in stderr
    assert picks_file.stat().st_mtime_ns == before  # nothing was timed, nothing written

    # A cached ONNX pick loads ONNX only: the second process never imports torch.
    data = json.loads(picks_file.read_text(encoding="utf-8"))
    for entry in data["picks"].values():
        if entry["key"] == pick.key:
            entry["pairs_per_s"] = {"onnx": 2.0 * pick.pairs_per_s["torch"], "torch": pick.pairs_per_s["torch"]}
    picks_file.write_text(json.dumps(data), encoding="utf-8")
    lines, _ = _second_process(rerank_model_path)
    assert "PICK onnx cache" in lines and "TORCH False" in lines
    scores_line = next(line for line in lines if line.startswith("SCORES"))
    first, second = json.loads(scores_line.removeprefix("SCORES "))
    assert first > second
