"""Calibration without weights: the fitters on synthetic data, the saved file, and the reranker hook."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from twostage_integrations.errors import InvalidDocumentError, InvalidParameterError
from twostage_integrations.evaluation.calibration_metrics import score_report
from twostage_integrations.rerank.calibration import (
    Calibration,
    brier_score,
    calibration_path,
    expected_calibration_error,
    fit_calibration,
    fit_isotonic,
    fit_platt,
    resolve_calibration,
)
from twostage_integrations.rerank.cross_encoder import CrossEncoderReranker
from twostage_integrations.scores import SCORE_KINDS


def _synthetic(n: int = 4000, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Sigmoid scores whose true P(relevant) is sigmoid(2 * logit - 3): over-confident raw scores."""
    rng = np.random.default_rng(seed)
    logit = rng.normal(0.0, 2.5, n)
    labels = (rng.random(n) < 1 / (1 + np.exp(-(2 * logit - 3)))).astype(int)
    return 1 / (1 + np.exp(-logit)), labels


@pytest.mark.parametrize("use_sklearn", [False, True])
def test_platt_recovers_the_true_map(use_sklearn):
    if use_sklearn:
        pytest.importorskip("sklearn")
    scores, labels = _synthetic(20000)
    logit = np.log(scores / (1 - scores))
    a, b = fit_platt(logit, labels, use_sklearn=use_sklearn)
    assert a == pytest.approx(2.0, abs=0.15)
    assert b == pytest.approx(-3.0, abs=0.2)


def test_numpy_isotonic_matches_sklearn_and_is_monotone():
    pytest.importorskip("sklearn")
    scores, labels = _synthetic(3000)
    mine = fit_isotonic(scores, labels, use_sklearn=False)
    theirs = fit_isotonic(scores, labels, use_sklearn=True)
    grid = np.linspace(0, 1, 501)
    np.testing.assert_allclose(np.interp(grid, *mine), np.interp(grid, *theirs), atol=1e-9)
    assert np.all(np.diff(mine[1]) >= 0) and np.all(np.diff(mine[0]) >= 0)


@pytest.mark.parametrize("method", ["platt", "isotonic", "auto"])
def test_fit_is_strictly_increasing_and_lowers_ece(method):
    scores, labels = _synthetic()
    cal = fit_calibration(scores, labels, method=method, use_sklearn=False)
    grid = np.linspace(0.0005, 0.9995, 2000)
    mapped = cal.apply(grid)
    assert np.all(np.diff(mapped) > 0), "the map must keep every ranking"
    assert np.all((mapped >= 0) & (mapped <= 1))
    assert cal.metrics["after"]["ece"] < cal.metrics["before"]["ece"]
    assert expected_calibration_error(cal.apply(scores), labels) < expected_calibration_error(scores, labels)
    assert brier_score(cal.apply(scores), labels) < brier_score(scores, labels)
    assert cal.method in ("platt", "isotonic") and cal.n_pairs == len(labels)


def test_one_label_only_or_bad_settings_are_refused():
    with pytest.raises(InvalidParameterError, match="relevant and non-relevant"):
        fit_calibration([0.1] * 50, [0] * 50)
    with pytest.raises(InvalidParameterError, match="method"):
        fit_calibration([0.1, 0.9] * 10, [0, 1] * 10, method="beta")


def test_saved_loaded_and_inverted(tmp_path):
    scores, labels = _synthetic()
    cal = fit_calibration(scores, labels, method="isotonic", use_sklearn=False)
    cal.fitted_on = {"dataset": "synthetic", "split": "train"}
    path = cal.save(tmp_path / "calibration.json")
    back = Calibration.load(path)
    assert back.to_dict() == json.loads(path.read_text())
    np.testing.assert_allclose(back.apply(scores), cal.apply(scores))
    np.testing.assert_allclose(1 / (1 + np.exp(-back.invert(back.apply(scores[:50])))), scores[:50], rtol=1e-6)
    (tmp_path / "bad.json").write_text('{"method": "platt"}')
    with pytest.raises(InvalidDocumentError, match="not a calibration"):
        Calibration.load(tmp_path / "bad.json")
    with pytest.raises(InvalidParameterError, match="not found"):
        Calibration.load(tmp_path / "missing.json")


def test_the_file_is_found_beside_a_local_model_and_in_the_cache_otherwise(tmp_path, monkeypatch):
    monkeypatch.setenv("TWOSTAGE_CACHE_DIR", str(tmp_path / "cache"))
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"weights")
    assert calibration_path(str(model), model) is None
    assert calibration_path(str(model), model, for_writing=True) == model / "calibration.json"
    hub = calibration_path("org/hub-model", model, for_writing=True)  # a hub id: never written into the snapshot
    assert hub is not None and hub.parent == tmp_path / "cache" / "onnx" and hub.name.startswith("calibration-")
    scores, labels = _synthetic(500)
    fit_calibration(scores, labels, use_sklearn=False).save(hub)
    assert calibration_path("org/hub-model", model) == hub


class _Engine:
    """Stands in for the ONNX/torch engine: fixed sigmoid scores, no weights."""

    def __init__(self, scores: list[float]) -> None:
        self.scores = scores
        self.last_stats = SimpleNamespace(truncated=0, pairs=len(scores))

    def predict(self, pairs):
        return np.array(self.scores[: len(pairs)], dtype=np.float32).reshape(-1, 1)


def _reranker(calibration) -> CrossEncoderReranker:
    ce = object.__new__(CrossEncoderReranker)  # the constructor would load weights
    ce.name, ce.max_length, ce.activation = "fake-ce", 64, "sigmoid"
    ce.engine = _Engine([0.2, 0.9, 0.05])
    ce.base_score_kind = "ce_sigmoid"
    ce.calibration = resolve_calibration(calibration, ce.name, None, "ce_sigmoid")
    return ce


def test_the_reranker_applies_the_calibration_and_says_so(tmp_path):
    scores, labels = _synthetic()
    cal = fit_calibration(scores, labels, use_sklearn=False)
    path = cal.save(tmp_path / "calibration.json")
    raw, calibrated = _reranker(False), _reranker(str(path))
    assert raw.score_kind == "ce_sigmoid" and calibrated.score_kind == "ce_calibrated"
    assert "ce_calibrated" in SCORE_KINDS
    pairs = [("q", "a"), ("q", "b"), ("q", "c")]
    got = calibrated.score_pairs(pairs)
    np.testing.assert_allclose(got, cal.apply(np.array(raw.score_pairs(pairs), dtype=np.float32)), rtol=1e-6)
    assert np.argsort(got).tolist() == np.argsort(raw.score_pairs(pairs)).tolist()
    with pytest.raises(InvalidParameterError, match="sigmoid or logit"):
        resolve_calibration(str(path), "m", None, "ce_tanh")
    with pytest.raises(InvalidParameterError, match="calibration must be"):
        resolve_calibration(3, "m", None, "ce_sigmoid")


def test_eval_score_report_before_after_and_threshold():
    scores, labels = _synthetic(600)
    cal = fit_calibration(scores, labels, use_sklearn=False)
    probs = cal.apply(scores)
    ranked, qrels = {}, {}
    for q in range(60):  # 60 queries of 10 candidates, best first
        idx = range(q * 10, q * 10 + 10)
        ranked[str(q)] = sorted(((f"d{i}", float(probs[i])) for i in idx), key=lambda h: -h[1])
        qrels[str(q)] = {f"d{i}": 1 for i in idx if labels[i]} or {"unjudged": 0}
    report = score_report(qrels, ranked, kind="ce_calibrated", top_k=5, calibration=cal, min_score=0.5)
    block = report["calibration"]
    assert block["after"]["ece"] < block["before"]["ece"]
    kept = report["min_score"]
    assert kept["threshold"]["results_per_query"] < kept["top_k_only"]["results_per_query"]
    assert kept["threshold"]["precision"] >= kept["top_k_only"]["precision"]
    assert 0 < kept["empty"] <= 1 and kept["empty_with_relevant_candidate"] <= kept["empty"]
    with pytest.raises(InvalidParameterError, match="outside the range of ce_calibrated"):
        score_report(qrels, ranked, kind="ce_calibrated", top_k=5, min_score=1.5)
