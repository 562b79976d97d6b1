"""The ONNX export cache with the real cross-encoder (issue 24): a truncated or corrupt cached graph is exported
again and scores as before, a read-only cache dir still scores (with a warning), and three processes starting at
once on an empty cache export once and all score. Each test uses its own cache dir, so each exports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from twostage_integrations import CrossEncoderReranker
from twostage_integrations.rerank import onnx_export

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

QUERY = "aspirin"
DOCS = ["aspirin lowers the risk of stroke", "bananas are yellow", "low-dose aspirin and bleeding"]


def onnx_scores(model: str) -> tuple[Path, list[float]]:
    ce = CrossEncoderReranker(model, backend="onnx")
    return ce.model.path, ce.score(QUERY, DOCS)


def export_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == onnx_export.__name__]


def test_a_truncated_or_corrupt_cached_graph_is_exported_again_and_scores_the_same(
    rerank_model_path, tmp_path, monkeypatch, caplog
):
    monkeypatch.setenv("TWOSTAGE_CACHE_DIR", str(tmp_path))
    path, before = onnx_scores(rerank_model_path)
    assert path.is_relative_to(tmp_path)

    # Truncated (a full disk, a killed export): the size check catches it.
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    caplog.clear()
    again, after = onnx_scores(rerank_model_path)
    assert again == path
    np.testing.assert_allclose(after, before, atol=1e-6)
    [line] = export_lines(caplog)
    assert "to ONNX again: the cached" in line and "truncated" in line

    # Garbage whose manifest matches it (a copied, broken cache): only ONNX Runtime notices; exported again once.
    path.write_bytes(b"not an onnx graph" * 1000)
    manifest = json.loads(path.with_suffix(".json").read_text())
    sha = onnx_export._sha256(path)
    path.with_suffix(".json").write_text(json.dumps({**manifest, "size": path.stat().st_size, "sha256": sha}))
    monkeypatch.setattr(onnx_export, "_VERIFIED", set())  # as a new process would see it
    caplog.clear()
    _, repaired = onnx_scores(rerank_model_path)
    np.testing.assert_allclose(repaired, before, atol=1e-6)
    [line] = export_lines(caplog)
    assert "could not be loaded by ONNX Runtime" in line


def test_an_unwritable_cache_dir_still_scores_with_a_warning(rerank_model_path, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("a cache dir under a regular file cannot be created, even by root")
    env = {**os.environ, "TWOSTAGE_CACHE_DIR": str(blocker / "cache"), "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir()
    code = (
        "import json\nfrom twostage_integrations import CrossEncoderReranker\n"
        f"ce = CrossEncoderReranker({rerank_model_path!r}, backend='onnx')\n"
        f"print(ce.model.path)\nprint(json.dumps([float(s) for s in ce.score({QUERY!r}, {DOCS!r})]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr
    path_line, scores_line = proc.stdout.strip().splitlines()[-2:]
    assert Path(path_line).parent == tmp_path / "tmp" / f"twostage-onnx-{os.getuid()}"
    scores = json.loads(scores_line)
    assert scores[0] > scores[1]
    warnings = [line for line in proc.stderr.splitlines() if "cannot write the ONNX cache" in line]
    assert len(warnings) == 1 and str(blocker / "cache" / "onnx") in warnings[0]


@pytest.mark.skipif(onnx_export.fcntl is None, reason="the cross-process lock needs fcntl")
def test_three_processes_on_an_empty_cache_export_once_and_all_score(rerank_model_path, tmp_path):
    env = {**os.environ, "TWOSTAGE_CACHE_DIR": str(tmp_path)}
    code = (
        "import json\nfrom twostage_integrations import CrossEncoderReranker\n"
        f"ce = CrossEncoderReranker({rerank_model_path!r}, backend='onnx')\n"
        f"print(json.dumps([float(s) for s in ce.score({QUERY!r}, {DOCS!r})]))\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=900) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err for _, err in outs]
    scores = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    np.testing.assert_allclose(scores[1], scores[0], atol=1e-6)
    np.testing.assert_allclose(scores[2], scores[0], atol=1e-6)
    # One export (each process's export line goes to stderr through logging's last-resort handler).
    assert sum("to ONNX (once; cached at" in err for _, err in outs) == 1
    # Besides the graph: its manifest, its lock, and the cache-key memo (HASH_MEMO, written atomically too).
    files = sorted(p.name for p in (tmp_path / "onnx").iterdir() if p.name != onnx_export.HASH_MEMO)
    assert len([f for f in files if f.endswith(".onnx")]) == 1 and not [f for f in files if f.endswith(".tmp")]
    [graph] = (tmp_path / "onnx").glob("*.onnx")
    assert files == sorted([graph.name, graph.with_suffix(".json").name, graph.name + ".lock"])
    assert onnx_export._check(graph) is None  # size and sha256 match the manifest
