"""``backend="auto"``: choosing among fake engines with fixed costs on a fake clock (no weights, no real timing),
the cached pick and when it is timed again, and ``twostage doctor`` over such a cache."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from typer.testing import CliRunner

from twostage_integrations.cli import app
from twostage_integrations.errors import ModelLoadError
from twostage_integrations.rerank import autopick
from twostage_integrations.rerank.onnx import BACKENDS
from twostage_integrations.spec import PipelineSpec

PAIRS = [("query", f"passage {i}") for i in range(64)]


class Clock:
    """A seconds clock that only moves when a fake engine works."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeEngine:
    """Scores pairs at a fixed cost per pair on the fake clock, and counts its calls."""

    batch_size = 16

    def __init__(self, clock: Clock, seconds_per_pair: float) -> None:
        self.clock, self.cost, self.calls = clock, seconds_per_pair, 0

    def predict(self, pairs):
        self.calls += 1
        self.clock.now += self.cost * len(pairs)
        return np.zeros((len(pairs), 1), dtype=np.float32)


class Loaders(dict):
    """Engine loaders by name that record which engines were loaded."""

    def __init__(self, clock: Clock, costs: dict[str, float]) -> None:
        self.loaded: list[str] = []
        self.engines: dict[str, FakeEngine] = {}
        for name, cost in costs.items():
            self[name] = self._loader(name, clock, cost)

    def _loader(self, name, clock, cost):
        def load():
            self.loaded.append(name)
            self.engines[name] = FakeEngine(clock, cost)
            return self.engines[name]

        return load


def key(**changes):
    base = {
        "model_hash": "abc123",
        "max_length": 192,
        "batch_sizes": {"onnx": 16, "torch": 32},
        "threads": 2,
        "cpu": "Test CPU",
        "versions": {"onnxruntime": "1.0", "torch": "2.0", "transformers": "5.0"},
    }
    return autopick.pick_key(**{**base, **changes})


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def picks(tmp_path):
    return tmp_path / "onnx" / autopick.PICKS_FILE


def pick(loaders, clock, picks, *, torch_loaded=True, **key_changes):
    return autopick.pick_engine(
        loaders,
        key=key(**key_changes),
        label="m",
        cache_file=picks,
        pairs=PAIRS,
        timer=clock,
        torch_loaded=torch_loaded,
    )


def test_auto_is_a_backend_everywhere_a_backend_is_named():
    assert "auto" in BACKENDS and "onnx-int8" in BACKENDS
    spec = PipelineSpec.parse("dense:20 > default@backend=AUTO > top_k=5")
    assert spec.stages[0].backend == "auto"


@pytest.mark.parametrize(
    ("costs", "fastest"), [({"torch": 0.01, "onnx": 0.02}, "torch"), ({"torch": 0.03, "onnx": 0.01}, "onnx")]
)
def test_auto_picks_the_fastest_engine_and_keeps_it_loaded(clock, picks, costs, fastest, caplog):
    loaders = Loaders(clock, costs)
    with caplog.at_level(logging.INFO, logger=autopick.__name__):
        chosen, engine = pick(loaders, clock, picks)
    assert chosen.backend == fastest and chosen.source == "timed"
    assert engine is loaders.engines[fastest]
    assert chosen.pairs_per_s == pytest.approx({name: 1 / cost for name, cost in costs.items()})
    assert sorted(loaders.loaded) == ["onnx", "torch"]
    # every engine: one warm-up batch, then one call per round (interleaved)
    assert {name: e.calls for name, e in loaders.engines.items()} == {n: 1 + autopick.ROUNDS for n in costs}
    (line,) = [r.getMessage() for r in caplog.records if r.name == autopick.__name__]
    assert f"rerank engine {fastest} for m (timed" in line and "pairs/s" in line


def test_the_cached_pick_is_reused_without_timing(clock, picks):
    pick(Loaders(clock, {"torch": 0.03, "onnx": 0.01}), clock, picks)
    again = Loaders(clock, {"torch": 0.03, "onnx": 0.01})
    chosen, engine = pick(again, clock, picks)
    assert chosen.source == "cache" and chosen.backend == "onnx"
    assert again.loaded == ["onnx"] and engine.calls == 0  # only the pick is loaded, and nothing is timed
    assert chosen.pairs_per_s == pytest.approx({"onnx": 100.0, "torch": 100 / 3}, abs=0.01)  # stored rounded


@pytest.mark.parametrize(
    "change",
    [
        {"model_hash": "def456"},
        {"versions": {"onnxruntime": "1.1", "torch": "2.0", "transformers": "5.0"}},
        {"versions": {"onnxruntime": "1.0", "torch": "2.1", "transformers": "5.0"}},
        {"max_length": 64},
        {"cpu": "Other CPU"},
    ],
)
def test_a_changed_model_version_limit_or_cpu_is_timed_again(clock, picks, change):
    pick(Loaders(clock, {"torch": 0.03, "onnx": 0.01}), clock, picks)
    again = Loaders(clock, {"torch": 0.01, "onnx": 0.03})  # the new setting makes torch faster
    chosen, _ = pick(again, clock, picks, **change)
    assert chosen.source == "timed" and chosen.backend == "torch"
    assert sorted(again.loaded) == ["onnx", "torch"]
    assert len(autopick.read_picks(picks)) == 2  # both measurements are kept


def test_retiming_replaces_the_cached_pick(clock, picks):
    pick(Loaders(clock, {"torch": 0.03, "onnx": 0.01}), clock, picks)
    with autopick.retiming():
        chosen, _ = pick(Loaders(clock, {"torch": 0.01, "onnx": 0.03}), clock, picks)
    assert chosen.source == "timed" and chosen.backend == "torch"
    (entry,) = autopick.read_picks(picks).values()
    assert entry["pairs_per_s"]["torch"] == pytest.approx(100.0)


def test_the_torch_free_engine_wins_within_the_margin_unless_torch_is_loaded(clock, picks):
    costs = {"torch": 0.0100, "onnx": 0.0104}  # onnx about 4% slower than torch
    chosen, engine = pick(Loaders(clock, costs), clock, picks, torch_loaded=False)
    assert chosen.backend == "onnx"
    # the measurements are cached, the margin is applied per process: with torch imported, torch wins
    loaders = Loaders(clock, costs)
    chosen, _ = pick(loaders, clock, picks, torch_loaded=True)
    assert chosen.backend == "torch" and loaders.loaded == ["torch"]
    # beyond the margin torch wins even in a torch-free process
    chosen, _ = pick(Loaders(clock, {"torch": 0.0100, "onnx": 0.0120}), clock, picks, torch_loaded=False, max_length=9)
    assert chosen.backend == "torch"


def test_decide_margin_edges():
    assert autopick.decide({"torch": 100.0, "onnx": 95.0}, torch_loaded=False) == "onnx"
    assert autopick.decide({"torch": 100.0, "onnx": 94.0}, torch_loaded=False) == "torch"
    assert autopick.decide({"torch": 90.0, "onnx": 100.0}, torch_loaded=True) == "onnx"


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"version": 99, "picks": {}}', ""])
def test_a_corrupted_cache_is_ignored_with_a_warning_and_timed_again(clock, picks, content, caplog):
    pick(Loaders(clock, {"torch": 0.03, "onnx": 0.01}), clock, picks)
    picks.write_text(content, encoding="utf-8")
    loaders = Loaders(clock, {"torch": 0.03, "onnx": 0.01})
    with caplog.at_level(logging.WARNING, logger=autopick.__name__):
        chosen, _ = pick(loaders, clock, picks)
    assert chosen.source == "timed" and sorted(loaders.loaded) == ["onnx", "torch"]
    assert any("ignoring the engine pick cache" in r.getMessage() for r in caplog.records)
    assert len(autopick.read_picks(picks)) == 1  # rewritten whole


def test_a_malformed_entry_is_timed_again(clock, picks):
    pick(Loaders(clock, {"torch": 0.03, "onnx": 0.01}), clock, picks)
    data = json.loads(picks.read_text(encoding="utf-8"))
    (entry,) = data["picks"].values()
    entry["pairs_per_s"] = {"onnx": "fast"}
    picks.write_text(json.dumps(data), encoding="utf-8")
    chosen, _ = pick(Loaders(clock, {"torch": 0.03, "onnx": 0.01}), clock, picks)
    assert chosen.source == "timed"


def test_one_engine_is_used_without_timing_or_cache(clock, picks):
    loaders = Loaders(clock, {"onnx": 0.01})
    chosen, engine = pick(loaders, clock, picks)
    assert chosen.source == "only" and chosen.backend == "onnx" and engine.calls == 0
    assert not picks.exists()


def test_an_engine_that_cannot_load_is_left_out(clock, picks, caplog):
    loaders = Loaders(clock, {"torch": 0.03})

    def broken():
        raise ModelLoadError("several modules")

    loaders["onnx"] = broken
    with caplog.at_level(logging.WARNING, logger=autopick.__name__):
        chosen, _ = pick(loaders, clock, picks)
    assert chosen.backend == "torch" and chosen.source == "only"
    assert any("onnx cannot run m" in r.getMessage() for r in caplog.records)


def test_timing_pairs_are_real_passages():
    pairs = autopick.timing_pairs(256)
    assert len(pairs) == 256 and len({text for _, text in pairs}) == 256
    assert all(q and t and len(t) > len(q) for q, t in pairs[:50])


def test_the_cpu_and_versions_are_read_without_importing_engines():
    code = (
        "import sys\n"
        "from twostage_integrations.rerank import autopick\n"
        "assert autopick.cpu_model() and isinstance(autopick.cpu_flags(), list)\n"
        "assert set(autopick.engine_versions()) == set(autopick.VERSIONED)\n"
        "print(sorted(m for m in ('torch', 'transformers', 'onnxruntime') if m in sys.modules))\n"
    )
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"


# -- twostage doctor --------------------------------------------------------------------------------------------
@pytest.fixture
def doctor_cache(tmp_path, monkeypatch, clock):
    """A cache dir holding one pick measured on this machine (fake engines) and one from another CPU."""
    monkeypatch.setenv("TWOSTAGE_CACHE_DIR", str(tmp_path))
    path = autopick.picks_file()
    here = key(cpu=autopick.cpu_model(), versions=autopick.engine_versions())
    from twostage_integrations.rerank.onnx import physical_cores

    here["threads"] = physical_cores()
    autopick.pick_engine(
        Loaders(clock, {"torch": 0.0100, "onnx": 0.0102}), key=here, label="ce-here", pairs=PAIRS, timer=clock
    )
    autopick.pick_engine(
        Loaders(clock, {"torch": 0.02, "onnx": 0.01}), key=key(), label="ce-elsewhere", pairs=PAIRS, timer=clock
    )
    (path.parent / "x.onnx").write_bytes(b"\0" * 2048)
    return path


def test_doctor_json_lists_the_machine_engines_picks_and_cache(doctor_cache):
    result = CliRunner().invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["machine"]["cpu"] == autopick.cpu_model() and report["machine"]["usable_cores"] >= 1
    assert set(report["packages"]) == set(autopick.PACKAGES)
    here, elsewhere = report["picks"]
    assert (here["model"], here["pick"], here["pick_torch_loaded"], here["current"]) == (
        "ce-here",
        "onnx",
        "torch",
        True,
    )
    assert here["pairs_per_s"] == pytest.approx({"torch": 100.0, "onnx": 100 / 1.02}, abs=0.01)
    assert (elsewhere["model"], elsewhere["pick"], elsewhere["current"]) == ("ce-elsewhere", "onnx", False)
    assert report["cache"]["dir"] == str(doctor_cache.parent)
    assert report["cache"]["files"] >= 3 and report["cache"]["bytes"] >= 2048  # x.onnx, the picks, their lock
    assert "retimed" not in report


def test_doctor_text(doctor_cache):
    result = CliRunner().invoke(app, ["doctor"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"machine: {autopick.cpu_model()}" in out
    assert (
        "ce-here @max_length=192: onnx (torch in a process that imported torch); onnx 98.0 pairs/s, torch 100.0" in out
    )
    assert "ce-elsewhere @max_length=192: onnx; onnx 100.0 pairs/s, torch 50.0 pairs/s" in out and "stale" in out
    assert f"ONNX cache: {doctor_cache.parent} (" in out


def test_doctor_retime_times_the_model_again(doctor_cache, monkeypatch):
    from twostage_integrations.cli import doctor as doctor_cli
    from twostage_integrations.rerank import cross_encoder

    seen = []

    class Reranker:
        def __init__(self, model, *, backend):
            seen.append((model, backend, autopick._retime.get()))
            self.name, self.backend, self.max_length = model or "default-ce", "onnx", 128
            self.engine_pick = autopick.EnginePick("onnx", "timed", {"onnx": 50.0, "torch": 40.0})

    monkeypatch.setattr(cross_encoder, "CrossEncoderReranker", Reranker)
    result = CliRunner().invoke(app, ["doctor", "--retime", "--rerank-model", "my-ce", "--json"])
    assert result.exit_code == 0, result.output
    assert seen == [("my-ce", "auto", True)]  # forced to time again, whatever is cached
    assert json.loads(result.output)["retimed"] == {
        "model": "my-ce", "backend": "onnx", "source": "timed", "pairs_per_s": {"onnx": 50.0, "torch": 40.0},
        "max_length": 128,
    }  # fmt: skip
    assert "retimed my-ce (max_length 128): onnx (timed; onnx 50.0 pairs/s, torch 40.0 pairs/s)" in (
        doctor_cli.render_report(doctor_cli.doctor_report(rerank_model="my-ce", retime=True))
    )


def test_doctor_and_help_import_no_engine():
    code = (
        "import sys\n"
        "from twostage_integrations.cli import app\n"
        "sys.argv = ['twostage', '--help']\n"
        "try:\n    app()\nexcept SystemExit:\n    pass\n"
        "heavy = ('torch', 'transformers', 'onnxruntime', 'sentence_transformers')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert "doctor" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "[]"
