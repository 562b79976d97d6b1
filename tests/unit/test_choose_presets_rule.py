"""The rule benchmarks/choose_presets.py applies to pick the default preset: the fastest candidate at the default
recall depth among those within the tolerance of ``exact`` on every dataset and limit. Rows are made up here (no
weights); the script's scoring is exercised by running it (docs/pipeline_spec.md)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "choose_presets.py"


@pytest.fixture(scope="module")
def pick_default():
    spec = importlib.util.spec_from_file_location("choose_presets", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.pick_default


def _rows(table: dict[str, dict[int, tuple[float, float]]], datasets=("a", "b")) -> list[dict]:
    """preset -> limit -> (nDCG@10, est. ms), the same on every dataset."""
    return [
        {"dataset": d, "limit": limit, "preset": preset, "ndcg@10": ndcg, "est_rerank_ms_per_query": ms}
        for d in datasets
        for preset, by_limit in table.items()
        for limit, (ndcg, ms) in by_limit.items()
    ]


TABLE = {
    "exact": {20: (0.70, 600.0), 50: (0.70, 1500.0), 100: (0.70, 3000.0)},
    "int8": {20: (0.70, 300.0), 50: (0.70, 750.0), 100: (0.70, 1500.0)},
    # cheaper in total (deep limits) but dearer at 20, where the default pipeline recalls
    "cascade": {20: (0.699, 400.0), 50: (0.70, 600.0), 100: (0.70, 1000.0)},
    # the cheapest everywhere, but 0.008 below exact at one limit
    "short": {20: (0.70, 100.0), 50: (0.692, 250.0), 100: (0.70, 500.0)},
}


def test_the_fastest_at_the_default_depth_among_those_within_tolerance(pick_default):
    rows = _rows(TABLE)
    assert pick_default(rows) == "int8"  # "short" fails at 50; "cascade" costs more at 20
    assert pick_default(rows, tolerance=0.01) == "short"  # within 0.01 it qualifies and is cheapest at 20
    assert pick_default(rows, depth=100) == "cascade"


def test_one_dataset_below_tolerance_rules_a_candidate_out(pick_default):
    rows = _rows(TABLE)
    for r in rows:
        if r["preset"] == "int8" and r["dataset"] == "b" and r["limit"] == 100:
            r["ndcg@10"] = 0.694  # 0.006 below exact on the second domain only
    assert pick_default(rows) == "cascade"


def test_without_rows_at_the_depth_the_cost_is_summed_and_exact_is_the_fallback(pick_default):
    deep = _rows({k: {50: v[50], 100: v[100]} for k, v in TABLE.items()})
    assert pick_default(deep) == "cascade"  # 1,600 ms summed against int8's 2,250
    worse = _rows({"exact": {20: (0.70, 600.0)}, "int8": {20: (0.60, 300.0)}})
    assert pick_default(worse) == "exact"
