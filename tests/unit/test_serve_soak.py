"""`twostage bench-serve --soak`: request bodies, RSS sampling, error counting and the report, against an
in-process server over a fake reranker (the soak itself, on a real model, is a documented command)."""

from __future__ import annotations

import itertools
import json
import mmap
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner

from twostage_integrations.bench import soak
from twostage_integrations.bench.soak import (
    SoakReport,
    read_rss,
    read_soak_json,
    run_soak,
    serve_subprocess,
    server_environment,
    soak_bodies,
    write_soak_json,
)
from twostage_integrations.bench.soak_plot import plot_soak
from twostage_integrations.cli import app
from twostage_integrations.errors import InvalidParameterError
from twostage_integrations.server import create_app, serve_in_thread
from twostage_integrations.testing import FakeReranker

CORPUS = [f"passage {i} about aspirin heart attack risk and other words number {i} " * 3 for i in range(40)]
QUERIES = ["aspirin", "heart attack", "risk of words", "number seven"]
MIB = 1024 * 1024


class FailsOnBoom(FakeReranker):
    """A fake that raises for queries containing 'boom' (the server answers those with 500)."""

    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        if "boom" in query:
            raise RuntimeError("boom")
        return super().score(query, texts)


def test_soak_bodies_are_varied_seeded_windows_of_real_passages() -> None:
    bodies = list(soak_bodies(CORPUS, QUERIES, requests=50, documents=10, doc_words=(3, 6), seed=7))
    again = list(soak_bodies(CORPUS, QUERIES, requests=50, documents=10, doc_words=(3, 6), seed=7))
    other = list(soak_bodies(CORPUS, QUERIES, requests=50, documents=10, doc_words=(3, 6), seed=8))
    assert bodies == again and bodies != other
    assert len(bodies) == 50 and {b["query"] for b in bodies} == set(QUERIES)
    for body in bodies:
        assert body["model"] == "local" and len(body["documents"]) == 10
        for doc in body["documents"]:
            assert 3 <= len(doc.split()) <= 6
            assert any(doc in " ".join(p.split()) for p in CORPUS)  # a contiguous window of a passage
    assert len({d for b in bodies for d in b["documents"]}) > 100  # not the same few texts over and over
    whole = next(soak_bodies(CORPUS, QUERIES, requests=1, documents=5))
    assert all(d in CORPUS for d in whole["documents"]) and len(set(whole["documents"])) == 5


@pytest.mark.parametrize(
    "kwargs",
    [{"requests": 0}, {"documents": 0}, {"doc_words": (5, 2)}, {"doc_words": (0, 2)}],
)
def test_soak_bodies_refuse_bad_settings(kwargs: dict) -> None:
    with pytest.raises(InvalidParameterError):
        list(soak_bodies(CORPUS, QUERIES, **{"requests": 3, **kwargs}))
    with pytest.raises(InvalidParameterError):
        list(soak_bodies([], QUERIES, requests=3))


def test_run_soak_samples_rss_on_schedule_and_counts_server_errors() -> None:
    bodies = list(soak_bodies(CORPUS, QUERIES, requests=30, documents=4, doc_words=(2, 5)))
    for i in (3, 17, 29):
        bodies[i]["query"] = "boom goes the model"
    reads = itertools.count(1000)  # a fake RSS that grows by one per read: samples must come out in order
    done: list[int] = []
    seen: list[tuple[int, int]] = []
    errors_seen: list[int] = []
    with serve_in_thread(create_app(FailsOnBoom(), max_queue=64)) as url:
        samples, errors, examples, seconds = run_soak(
            url,
            lambda: next(reads),
            bodies,
            requests=30,
            clients=4,
            rss_every=7,
            on_done=done.append,
            on_sample=lambda n, rss, errors: seen.append((n, rss)) or errors_seen.append(errors),
        )
    assert seen == samples and errors_seen[-1] == errors and errors_seen == sorted(errors_seen)
    assert [n for n, _ in samples] == [0, 7, 14, 21, 28, 30]  # before, every 7, and the last one
    assert [rss for _, rss in samples] == sorted(rss for _, rss in samples)
    assert errors == 3 and len(examples) == 3 and all(e.startswith("HTTP 500") for e in examples)
    assert sorted(done) == list(range(1, 31)) and seconds > 0


def test_run_soak_counts_transport_failures_and_stops_at_requests() -> None:
    port = soak._free_port()  # nothing listens there
    bodies = soak_bodies(CORPUS, QUERIES, requests=100, documents=2)
    samples, errors, examples, _ = run_soak(
        f"http://127.0.0.1:{port}", lambda: 1, bodies, requests=6, clients=2, rss_every=100
    )
    assert errors == 6 and "ConnectError" in examples[0]
    assert [n for n, _ in samples] == [0, 6]
    two = list(soak_bodies(CORPUS, QUERIES, requests=2, documents=2))
    with pytest.raises(InvalidParameterError, match="only 2 request bodies"):
        run_soak(f"http://127.0.0.1:{port}", lambda: 1, two, requests=5, clients=1)


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads /proc (Linux)")
def test_read_rss_sees_memory_being_touched_with_and_without_psutil(monkeypatch: pytest.MonkeyPatch) -> None:
    # A fresh anonymous mapping: none of it is resident until touched (a bytearray may reuse heap pages a long
    # test run already holds, and then RSS does not move).
    block = mmap.mmap(-1, 64 * MIB)
    before = read_rss(os.getpid())
    for i in range(0, len(block), 4096):
        block[i] = 1
    with_psutil = read_rss(os.getpid())
    monkeypatch.setitem(sys.modules, "psutil", None)  # import psutil now raises ImportError: /proc fallback
    from_proc = read_rss(os.getpid())
    assert with_psutil - before >= 48 * MIB
    assert abs(from_proc - with_psutil) < 16 * MIB
    block.close()
    sleeper = subprocess.Popen(["sleep", "60"], env={**os.environ, "MALLOC_ARENA_MAX": "2", "OTHER_VAR": "x"})
    try:
        cmdline = Path(f"/proc/{sleeper.pid}/cmdline")
        for _ in range(500):  # until the child has exec'd `sleep`: before that /proc shows the parent's environment
            if cmdline.read_bytes().startswith(b"sleep"):
                break
            time.sleep(0.01)
        env = server_environment(sleeper.pid)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert env.get("MALLOC_ARENA_MAX") == "2" and "OTHER_VAR" not in env
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with pytest.raises(ProcessLookupError):
        read_rss(dead.pid)


def _report(engine: str, samples: list[tuple[int, int]], requests: int = 1000) -> SoakReport:
    return SoakReport(engine, "m", requests, 4, 10, (4, 16), 100, samples=samples, errors=0, seconds=50.0, cpu="x")


def test_report_numbers_round_trip_and_plot(tmp_path: Path) -> None:
    samples = [(0, 100 * MIB), (100, 150 * MIB), (500, 200 * MIB), (600, 260 * MIB), (1000, 210 * MIB)]
    report = _report("onnx", samples)
    assert report.rss_baseline == 200 * MIB and report.rss_end == 210 * MIB and report.rss_max == 260 * MIB
    assert report.ratio == pytest.approx(1.05) and report.requests_per_s == pytest.approx(20.0)
    assert "| onnx | 200 | 210 | 1.050 | 260 | 0 |" in report.table()
    short = _report("torch", [(0, 10), (20, 30), (40, 50)], requests=40)  # shorter than 500: its end is the base
    assert short.rss_baseline == 50 and short.ratio == 1.0
    back = read_soak_json(write_soak_json(report, tmp_path / "a.json"))
    assert back == report and json.loads(json.dumps(back.as_dict())) == json.loads((tmp_path / "a.json").read_text())
    assert report.legend == "onnx (4 clients, x)"  # runs told apart in a --compare plot
    short.server_env, short.label = {"MALLOC_ARENA_MAX": "2"}, "padded widths"
    assert short.legend == "torch (4 clients, x, MALLOC_ARENA_MAX=2, padded widths)"
    assert read_soak_json(write_soak_json(short, tmp_path / "b.json")).label == "padded widths"
    pytest.importorskip("matplotlib")
    out = plot_soak([report, short], tmp_path / "rss.png")
    assert out.read_bytes().startswith(b"\x89PNG")
    with pytest.raises(InvalidParameterError):
        read_soak_json(tmp_path / "missing.json")
    (tmp_path / "other.json").write_text('{"modes": []}')
    with pytest.raises(InvalidParameterError, match="not a soak report"):
        read_soak_json(tmp_path / "other.json")


def test_cli_compare_plots_saved_soaks_and_refuses_bad_options(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    write_soak_json(_report("onnx", [(0, 100 * MIB), (1000, 101 * MIB)]), tmp_path / "onnx.json")
    write_soak_json(_report("torch", [(0, 300 * MIB), (1000, 330 * MIB)]), tmp_path / "torch.json")
    runner = CliRunner()
    args = ["bench-serve", "--compare", str(tmp_path / "onnx.json"), "--compare", str(tmp_path / "torch.json")]
    result = runner.invoke(app, [*args, "--plot", str(tmp_path / "both.png")])
    assert result.exit_code == 0, result.output
    assert "| onnx |" in result.output and "| torch |" in result.output
    assert (tmp_path / "both.png").read_bytes().startswith(b"\x89PNG")
    assert runner.invoke(app, args).exit_code == 2  # no --plot
    bad_words = runner.invoke(app, ["bench-serve", "--soak", "10", "--doc-words", "9-3"])
    assert bad_words.exit_code == 2 and "--doc-words" in bad_words.output
    assert runner.invoke(app, ["bench-serve", "--soak", "0"]).exit_code == 2


def test_serve_subprocess_reports_a_server_that_cannot_start(tmp_path: Path) -> None:
    with (
        pytest.raises(RuntimeError, match="was not ready") as info,
        serve_subprocess(str(tmp_path / "no-such-model"), ready_timeout=120),
    ):
        pass
    assert "no-such-model" in str(info.value)  # the server's own error line is quoted
