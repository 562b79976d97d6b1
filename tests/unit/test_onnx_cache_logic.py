"""The ONNX export cache is checked, not trusted (issue 24): a corrupt, truncated or manifest-less file is made
again once with one clear line, a read-only cache falls back to a temporary folder, and threads or processes
exporting the same file at once export it once. The exporter is a fake that writes deterministic bytes."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from twostage_integrations.rerank import onnx_export

GRAPH = b"graph-bytes-" * 100


@pytest.fixture(autouse=True)
def fresh_state(monkeypatch, tmp_path):
    """Each test starts with nothing verified, rejected or warned about in this process, and a private tmp dir
    (the read-only fallback goes there, never into the machine's /tmp)."""
    monkeypatch.setattr(onnx_export, "_VERIFIED", set())
    monkeypatch.setattr(onnx_export, "_REJECTED", {})
    monkeypatch.setattr(onnx_export, "_FALLBACK_WARNED", set())
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(onnx_export.tempfile, "tempdir", str(tmp))


class Maker:
    """A fake export: writes GRAPH to the temp path and counts its calls."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls = 0
        self.delay = delay
        self._count = threading.Lock()

    def __call__(self, tmp: Path) -> Path:
        with self._count:
            self.calls += 1
        time.sleep(self.delay)  # widens the window in which a second exporter could start; nothing is timed
        tmp.write_bytes(GRAPH)
        return tmp


def build(target: Path, maker: Maker) -> Path:
    return onnx_export._build(target, maker, "exporting m to ONNX", {"v": 1})


def messages(caplog) -> list[str]:
    """This module's lines since the last ``caplog.clear()``."""
    return [r.getMessage() for r in caplog.records if r.name == onnx_export.__name__]


def test_manifest_records_size_and_sha256_and_a_good_file_is_reused(tmp_path, caplog):
    target, maker = tmp_path / "m.onnx", Maker()
    assert build(target, maker) == target
    manifest = json.loads(target.with_suffix(".json").read_text())
    assert manifest["size"] == len(GRAPH) and len(manifest["sha256"]) == 64 and manifest["v"] == 1
    onnx_export._VERIFIED.clear()  # a new process: hashes the file again, and it passes
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=onnx_export.__name__):
        assert build(target, maker) == target
    assert maker.calls == 1 and messages(caplog) == []


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda t: t.write_bytes(GRAPH[:50]), "is 50 bytes, its manifest records"),
        (lambda t: t.write_bytes(b"x" * len(GRAPH)), "does not match the sha256"),
        (lambda t: t.with_suffix(".json").unlink(), "has no manifest"),
        (lambda t: t.with_suffix(".json").write_text('{"v": 1}'), "manifest without size and sha256"),
        (lambda t: t.with_suffix(".json").write_text("{not json"), "unreadable manifest"),
    ],
    ids=["truncated", "garbage-same-size", "no-manifest", "old-manifest", "broken-manifest"],
)
def test_a_bad_cached_file_is_made_again_once_with_one_line(tmp_path, caplog, damage, reason):
    target, maker = tmp_path / "m.onnx", Maker()
    build(target, maker)
    damage(target)
    onnx_export._VERIFIED.clear()  # the damage happened "between processes"
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=onnx_export.__name__):
        assert build(target, maker) == target
        assert build(target, maker) == target  # fixed: the next lookup reuses it
    assert maker.calls == 2 and target.read_bytes() == GRAPH
    [line] = messages(caplog)
    assert line.startswith(f"twostage: exporting m to ONNX again: the cached {target} ") and reason in line


def test_a_wrong_hash_in_the_manifest_is_made_again(tmp_path, caplog):
    target, maker = tmp_path / "m.onnx", Maker()
    build(target, maker)
    manifest = json.loads(target.with_suffix(".json").read_text())
    target.with_suffix(".json").write_text(json.dumps({**manifest, "sha256": "0" * 64}))
    onnx_export._VERIFIED.clear()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=onnx_export.__name__):
        build(target, maker)
    assert maker.calls == 2 and len(messages(caplog)) == 1 and "sha256" in messages(caplog)[0]


def test_a_file_onnx_runtime_rejected_is_made_again_once(tmp_path, caplog):
    target, maker = tmp_path / "m.onnx", Maker()
    build(target, maker)
    assert onnx_export.reject_cached(target, "InvalidProtobuf: parsing failed")
    assert not onnx_export.reject_cached(target, "again")  # already rejected: a second re-export would not help
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=onnx_export.__name__):
        build(target, maker)
    assert maker.calls == 2
    [line] = messages(caplog)
    assert "could not be loaded by ONNX Runtime (InvalidProtobuf: parsing failed)" in line


def test_a_file_outside_the_checked_cache_is_not_rejected(tmp_path):
    shipped = tmp_path / "onnx" / "model.onnx"  # a model's own graph: exporting it again is not ours to do
    shipped.parent.mkdir()
    shipped.write_bytes(GRAPH)
    assert not onnx_export.reject_cached(shipped, "bad")
    assert not onnx_export.reject_cached(tmp_path / "missing.onnx", "bad")


def test_an_unwritable_cache_falls_back_to_a_temp_folder_with_one_warning(tmp_path, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")  # a cache dir under a regular file cannot be made, even by root
    maker = Maker()
    with caplog.at_level(logging.INFO, logger=onnx_export.__name__):
        first = build(blocker / "onnx" / "m.onnx", maker)
        second = build(blocker / "onnx" / "m.onnx", maker)
        other = build(blocker / "onnx" / "n.onnx", maker)
    fallback = tmp_path / "tmp" / f"twostage-onnx-{onnx_export.os.getuid()}"
    assert first == second == fallback / "m.onnx" and other == fallback / "n.onnx"
    assert first.read_bytes() == GRAPH and maker.calls == 2
    warnings = [m for m in messages(caplog) if "cannot write the ONNX cache" in m]
    assert len(warnings) == 1 and str(blocker / "onnx") in warnings[0] and str(fallback) in warnings[0]


def test_a_read_only_cache_with_a_good_file_is_used_as_is(tmp_path, monkeypatch, caplog):
    target, maker = tmp_path / "m.onnx", Maker()
    build(target, maker)
    onnx_export._VERIFIED.clear()
    # Root writes through chmod 0555, so the read-only mount is simulated: any write attempt would fail.
    monkeypatch.setattr(onnx_export, "_unwritable", lambda folder: "read-only file system")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=onnx_export.__name__):
        assert build(target, maker) == target
    assert maker.calls == 1 and messages(caplog) == []


def test_threads_exporting_one_file_export_once(tmp_path):
    target, maker = tmp_path / "m.onnx", Maker(delay=0.3)
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(build(target, maker))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [target] * 4 and maker.calls == 1


PROCESS = """
import sys, time
from pathlib import Path
from twostage_integrations.rerank.onnx_export import _build

target, log = Path(sys.argv[1]), Path(sys.argv[2])
def make(tmp):
    with open(log, "a") as f:
        f.write("export\\n")
    time.sleep(1)  # the other processes start meanwhile and must wait on the lock
    tmp.write_bytes(b"graph" * 1000)
    return tmp
print(_build(target, make, "exporting m to ONNX", {}).read_bytes() == b"graph" * 1000)
"""


@pytest.mark.skipif(onnx_export.fcntl is None, reason="the cross-process lock needs fcntl")
def test_three_processes_exporting_one_file_export_once(tmp_path):
    target, log = tmp_path / "cache" / "m.onnx", tmp_path / "exports.log"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PROCESS, str(target), str(log)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err for _, err in outs]
    assert [out.strip() for out, _ in outs] == ["True"] * 3
    assert log.read_text().splitlines() == ["export"]
    assert sum("exporting m to ONNX" in err for _, err in outs) == 1
    assert sorted(p.name for p in target.parent.iterdir()) == ["m.json", "m.onnx", "m.onnx.lock"]
