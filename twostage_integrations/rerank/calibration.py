"""Calibrated relevance: a monotone map from a cross-encoder's score to P(relevant), fitted on labelled pairs.

A cross-encoder's sigmoid is trained for ranking, not for probabilities: on SciFact its 0.5 is not "even odds".
:func:`fit_calibration` fits two maps on (score, label) pairs and keeps the one with the lower held-out log-loss:

- ``platt``: a logistic regression on the model's raw logit, ``p = sigmoid(a * logit + b)``;
- ``isotonic``: a non-decreasing step function of the logit (pool-adjacent-violators), interpolated linearly
  between its steps and blended with a tiny share of the Platt map so it is strictly increasing: the ranking
  of a calibrated reranker is exactly the uncalibrated one's.

scikit-learn does the fitting when it is installed; a small numpy fit (Newton steps for Platt, PAV for
isotonic) otherwise. :class:`Calibration` is saved as ``calibration.json`` beside the model folder, or, for hub
models and read-only folders, in the ONNX cache dir keyed by the model's hash (:func:`calibration_path`).
``CrossEncoderReranker`` applies it when present; its ``score_kind`` is then ``ce_calibrated``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidDocumentError, InvalidParameterError

logger = logging.getLogger(__name__)

FILE_NAME = "calibration.json"
METHODS = ("platt", "isotonic")
FORMAT_VERSION = 1
# The isotonic map's share of the Platt map: moves a probability by at most 0.001, and breaks every tie.
_BLEND = 1e-3
_EPS = 1e-12
# float32 sigmoid outputs: 1.0 means a logit above ~16.6, 0.0 one below ~-88 (clamped to what float32 holds).
_P_LOW, _P_HIGH = 2.0**-126, 1.0 - 2.0**-24


# -- metrics --------------------------------------------------------------------------------------------------
def _arrays(probs: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    p, y = np.asarray(probs, dtype=np.float64).ravel(), np.asarray(labels, dtype=np.float64).ravel()
    if p.shape != y.shape:
        raise InvalidParameterError(f"got {p.size} probabilities for {y.size} labels; pass one per label")
    return p, y


def expected_calibration_error(probs: Any, labels: Any, *, bins: int = 10) -> float:
    """ECE: the mean gap between predicted probability and observed share of relevant pairs, over ``bins``
    equal-width bins of 0..1, weighted by how many pairs each bin holds.

    Args:
        probs: Predicted probabilities, 0..1.
        labels: 1 (relevant) or 0, one per probability.
        bins: Equal-width bins.

    Returns:
        The ECE (0 = perfectly calibrated); NaN for no pairs.
    """
    p, y = _arrays(probs, labels)
    if not p.size:
        return math.nan
    which = np.minimum((np.clip(p, 0.0, 1.0) * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.sum() * abs(p[mask].mean() - y[mask].mean())
    return float(total / p.size)


def brier_score(probs: Any, labels: Any) -> float:
    """Mean squared gap between probability and label (0 is perfect; NaN for no pairs).

    Args:
        probs: Predicted probabilities.
        labels: 1 or 0, one per probability.

    Returns:
        The Brier score.
    """
    p, y = _arrays(probs, labels)
    return float(np.mean((p - y) ** 2)) if p.size else math.nan


def log_loss(probs: Any, labels: Any) -> float:
    """Mean negative log-likelihood of the labels (probabilities clipped away from 0 and 1).

    Args:
        probs: Predicted probabilities.
        labels: 1 or 0, one per probability.

    Returns:
        The log-loss; NaN for no pairs.
    """
    p, y = _arrays(probs, labels)
    if not p.size:
        return math.nan
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def quality(probs: Any, labels: Any) -> dict[str, float]:
    """``{"ece", "brier", "log_loss"}`` of ``probs`` against ``labels``.

    Args:
        probs: Predicted probabilities.
        labels: 1 or 0, one per probability.

    Returns:
        The three numbers.
    """
    return {"ece": expected_calibration_error(probs, labels), "brier": brier_score(probs, labels),
            "log_loss": log_loss(probs, labels)}  # fmt: skip


# -- what is fitted on: the logit ----------------------------------------------------------------------------
def to_logit(scores: Any, base_kind: str) -> np.ndarray:
    """The model's raw logit from its scores.

    Args:
        scores: Scores as the uncalibrated reranker gives them.
        base_kind: Their kind: ``ce_sigmoid`` (inverted) or ``ce_logit``/``ce`` (taken as is).

    Returns:
        The logits, float64.
    """
    s = np.asarray(scores, dtype=np.float64)
    if base_kind != "ce_sigmoid":
        return s
    p = np.clip(s, _P_LOW, _P_HIGH)
    return np.log(p) - np.log1p(-p)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -500, 500)))


# -- fitters ----------------------------------------------------------------------------------------------------
def _sklearn_available() -> bool:
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return False
    return True


def fit_platt(x: Any, y: Any, *, use_sklearn: bool | None = None) -> tuple[float, float]:
    """Logistic regression ``P(y=1) = sigmoid(a * x + b)`` (unregularised maximum likelihood).

    Args:
        x: Logits.
        y: Labels, 1 or 0.
        use_sklearn: Fit with scikit-learn (``None``: when installed), else with numpy Newton steps.

    Returns:
        ``(a, b)``.
    """
    x, y = _arrays(x, y)
    if use_sklearn is None:
        use_sklearn = _sklearn_available()
    if use_sklearn:
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(C=1e6, max_iter=1000).fit(x.reshape(-1, 1), y.astype(int))
        return float(model.coef_[0, 0]), float(model.intercept_[0])
    w = np.zeros(2)
    design = np.column_stack([x, np.ones_like(x)])
    for _ in range(100):  # Newton-Raphson on the log-likelihood, a tiny ridge keeping the Hessian invertible
        p = _sigmoid(design @ w)
        grad = design.T @ (p - y) + 1e-6 * w
        hess = (design * (p * (1 - p))[:, None]).T @ design + 1e-6 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return float(w[0]), float(w[1])


def fit_isotonic(x: Any, y: Any, *, use_sklearn: bool | None = None) -> tuple[list[float], list[float]]:
    """A non-decreasing least-squares fit of ``y`` on ``x`` (pool adjacent violators).

    Args:
        x: Logits.
        y: Labels, 1 or 0.
        use_sklearn: Fit with scikit-learn's ``IsotonicRegression`` (``None``: when installed), else numpy PAV.

    Returns:
        ``(xs, ys)``: the steps' knots, increasing in ``xs``, non-decreasing in ``ys``; apply with ``np.interp``.
    """
    x, y = _arrays(x, y)
    if use_sklearn is None:
        use_sklearn = _sklearn_available()
    if use_sklearn:
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(x, y)
        return [float(v) for v in iso.X_thresholds_], [float(v) for v in iso.y_thresholds_]
    order = np.argsort(x, kind="stable")
    xs, ys = x[order], y[order]
    ux, start = np.unique(xs, return_index=True)  # equal x values are one point, their mean label
    sums, counts = np.add.reduceat(ys, start), np.diff(np.append(start, xs.size)).astype(float)
    blocks: list[list[float]] = []  # [sum, count, first x, last x]
    for i in range(ux.size):
        blocks.append([sums[i], counts[i], ux[i], ux[i]])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] >= blocks[-1][0] / blocks[-1][1]:
            s, c, _, last = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += c
            blocks[-1][3] = last
    knots_x, knots_y = [], []
    for s, c, first, last in blocks:  # each block is flat from its first to its last x, as sklearn's knots
        knots_x += [first] if first == last else [first, last]
        knots_y += [s / c] * (1 if first == last else 2)
    return [float(v) for v in knots_x], [float(v) for v in knots_y]


# -- the fitted map -----------------------------------------------------------------------------------------
@dataclass
class Calibration:
    """A fitted map from a cross-encoder's score to P(relevant), and what it was fitted on.

    Attributes:
        method: ``"platt"`` or ``"isotonic"``.
        params: ``{"a", "b"}`` (Platt on the logit; isotonic keeps them for its blend) plus ``{"xs", "ys"}``
            (isotonic knots on the logit).
        base_kind: The uncalibrated scores' kind (``ce_sigmoid``: fitted on their logit).
        model: The model it was fitted for.
        fitted_on: Where the pairs came from (dataset, split, recall, limit, queries, backend...).
        n_pairs: Labelled pairs fitted on (``n_positive`` of them relevant).
        n_positive: Relevant pairs among them.
        metrics: ``{"before": {...}, "after": {...}, "candidates": {...}}``: ECE, Brier score and log-loss on
            the held-out pairs, before and after, and each method's held-out log-loss.
    """

    method: str
    params: dict[str, Any]
    base_kind: str = "ce_sigmoid"
    model: str = ""
    fitted_on: dict[str, Any] = field(default_factory=dict)
    n_pairs: int = 0
    n_positive: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InvalidParameterError(f"calibration method must be one of {', '.join(METHODS)}, got {self.method!r}")

    def apply_logit(self, logits: Any) -> np.ndarray:
        """P(relevant) for raw logits (strictly increasing in the logit).

        Args:
            logits: The model's logits.

        Returns:
            Probabilities, 0..1.
        """
        x = np.asarray(logits, dtype=np.float64)
        platt = _sigmoid(float(self.params["a"]) * x + float(self.params["b"]))
        if self.method == "platt":
            return platt
        iso = np.interp(x, self.params["xs"], self.params["ys"])
        return (1.0 - _BLEND) * iso + _BLEND * platt

    def apply(self, scores: Any) -> np.ndarray:
        """P(relevant) for the uncalibrated reranker's scores (of kind :attr:`base_kind`).

        Args:
            scores: The scores.

        Returns:
            Probabilities, 0..1, in the same order.
        """
        return self.apply_logit(to_logit(scores, self.base_kind))

    def invert(self, probs: Any) -> np.ndarray:
        """The logits :meth:`apply_logit` maps to ``probs`` (bisection; the map is strictly increasing), so an
        evaluation can compare a calibrated run with the raw scores without scoring twice.

        Args:
            probs: Calibrated probabilities.

        Returns:
            The logits, float64 (clamped to -60..60).
        """
        p = np.asarray(probs, dtype=np.float64)
        low, high = np.full(p.shape, -60.0), np.full(p.shape, 60.0)
        for _ in range(80):
            mid = (low + high) / 2
            below = self.apply_logit(mid) < p
            low, high = np.where(below, mid, low), np.where(below, high, mid)
        return (low + high) / 2

    def describe(self) -> str:
        """One line: the method and what it was fitted on (what ``score_kind``'s docs call "calibrated on")."""
        on = self.fitted_on
        where = f"{on.get('dataset', '?')} {on.get('split', '')}".strip()
        return f"{self.method} on {self.n_pairs} pairs of {where}"

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (what :meth:`save` writes)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, source: str = "calibration") -> Calibration:
        """Read the JSON form.

        Args:
            data: What :meth:`to_dict` gives.
            source: Where it came from, for the error message.

        Raises:
            InvalidDocumentError: Not a calibration (a missing or wrong field).
        """
        try:
            cal = cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
            cal.apply_logit(np.array([0.0]))  # every parameter it needs is there and numeric
        except (TypeError, KeyError, ValueError, AttributeError) as exc:
            raise InvalidDocumentError(
                f"{source} is not a calibration file ({exc}); re-run twostage calibrate"
            ) from None
        return cal

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the JSON form to ``path`` (atomically: a temporary file renamed).

        Args:
            path: The file.

        Returns:
            ``path``.
        """
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2), encoding="utf-8")
        os.replace(tmp, target)
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Calibration:
        """Read a ``calibration.json``.

        Args:
            path: The file.

        Returns:
            The calibration.

        Raises:
            InvalidParameterError: The file does not exist.
            InvalidDocumentError: It is not JSON, or not a calibration.
        """
        p = Path(path).expanduser()
        if not p.is_file():
            raise InvalidParameterError(f"calibration file {p} not found; make one with twostage calibrate")
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InvalidDocumentError(f"{p} is not a readable JSON calibration ({exc})") from None
        if not isinstance(data, dict):
            raise InvalidDocumentError(f"{p} is not a calibration file; re-run twostage calibrate")
        return cls.from_dict(data, str(p))


def fit_calibration(
    scores: Any,
    labels: Any,
    *,
    base_kind: str = "ce_sigmoid",
    method: str = "auto",
    holdout: float = 0.3,
    seed: int = 0,
    use_sklearn: bool | None = None,
) -> Calibration:
    """Fit Platt and isotonic maps on a split of the pairs; keep the one with the lower held-out log-loss
    (``method="auto"``), then refit it on every pair.

    Args:
        scores: The uncalibrated reranker's scores.
        labels: 1 (relevant) or 0, one per score.
        base_kind: The scores' kind (``ce_sigmoid``: fitted on their logit).
        method: ``"auto"``, ``"platt"`` or ``"isotonic"``.
        holdout: Share of the pairs held out to pick and measure (0 < holdout < 1).
        seed: Seed of the split.
        use_sklearn: Fit with scikit-learn (``None``: when installed).

    Returns:
        The calibration, with held-out ``metrics`` before and after (``model``/``fitted_on`` left for the caller).

    Raises:
        InvalidParameterError: A bad ``method``/``holdout``, or pairs of one label only (nothing to calibrate on).
    """
    if method not in ("auto", *METHODS):
        raise InvalidParameterError(f"method must be auto, platt or isotonic, got {method!r}")
    if not 0 < holdout < 1:
        raise InvalidParameterError(f"holdout must be between 0 and 1, got {holdout!r}")
    x, y = _arrays(to_logit(scores, base_kind), labels)
    if len(np.unique(y)) < 2 or y.size < 10:
        raise InvalidParameterError(
            f"calibration needs relevant and non-relevant pairs (at least 10 pairs), got {int(y.sum())} relevant of "
            f"{y.size}; use a split with more judged queries"
        )
    test = np.random.default_rng(seed).random(y.size) < holdout
    if len(np.unique(y[~test])) < 2 or not test.any():
        test = np.arange(y.size) % 3 == 0  # tiny sets: every third pair
    fits = {m: _fit(m, x[~test], y[~test], use_sklearn) for m in METHODS}
    held = {m: quality(fits[m].apply_logit(x[test]), y[test]) for m in METHODS}
    best = method if method != "auto" else min(METHODS, key=lambda m: held[m]["log_loss"])
    cal = _fit(best, x, y, use_sklearn)
    cal.base_kind, cal.n_pairs, cal.n_positive = base_kind, int(y.size), int(y.sum())
    before = np.asarray(scores, dtype=np.float64)[test] if base_kind == "ce_sigmoid" else _sigmoid(x[test])
    cal.metrics = {"held_out_pairs": int(test.sum()), "before": quality(before, y[test]), "after": held[best],
                   "candidates": {m: held[m] for m in METHODS}}  # fmt: skip
    return cal


def _fit(method: str, x: np.ndarray, y: np.ndarray, use_sklearn: bool | None) -> Calibration:
    a, b = fit_platt(x, y, use_sklearn=use_sklearn)
    params: dict[str, Any] = {"a": a, "b": b}
    if method == "isotonic":
        params["xs"], params["ys"] = fit_isotonic(x, y, use_sklearn=use_sklearn)
    return Calibration(method=method, params=params)


# -- where the file lives -----------------------------------------------------------------------------------
def _model_key(folder: Path) -> str:
    """The model's content hash (config and weights, or the shipped ONNX graph), as the ONNX cache keys it."""
    from .onnx_export import WEIGHT_FILES, _hash_files

    files = [folder / "config.json", *(folder / w for w in WEIGHT_FILES if (folder / w).is_file())]
    if len(files) == 1 and (folder / "onnx" / "model.onnx").is_file():
        files.append(folder / "onnx" / "model.onnx")
    return _hash_files([f for f in files if f.is_file()], {"calibration": FORMAT_VERSION})


def cached_calibration_path(folder: str | os.PathLike[str]) -> Path:
    """``<ONNX cache dir>/calibration-<model hash>.json``: where a hub model's or read-only folder's goes.

    Args:
        folder: The model folder (a hub snapshot or a local folder).

    Returns:
        The path (which may not exist).
    """
    from .onnx_export import cache_dir

    return cache_dir() / f"calibration-{_model_key(Path(folder))}.json"


def calibration_path(name: str, folder: str | os.PathLike[str], *, for_writing: bool = False) -> Path | None:
    """Where a model's calibration is (or, ``for_writing``, goes): ``<folder>/calibration.json`` for a local
    model folder (writable, when writing), else the cache file of :func:`cached_calibration_path`.

    Args:
        name: The model name as given (a local path, or a hub id).
        folder: The model folder it resolved to.
        for_writing: Return where a new calibration should be written.

    Returns:
        The path; ``None`` (reading) when there is no calibration for the model.
    """
    local = Path(name).expanduser().is_dir()
    beside = Path(folder) / FILE_NAME
    if for_writing:
        return beside if local and os.access(folder, os.W_OK) else cached_calibration_path(folder)
    if local and beside.is_file():
        return beside
    from .onnx_export import cache_dir

    if not any(cache_dir().glob("calibration-*.json")):  # no model has one: skip hashing the weights
        return None
    cached = cached_calibration_path(folder)
    return cached if cached.is_file() else None


def resolve_calibration(
    setting: bool | str | os.PathLike[str] | Calibration | None, name: str, folder: Any, base_kind: str
) -> Calibration | None:
    """The calibration a cross-encoder applies.

    Args:
        setting: ``None``/``"auto"``/``True``: the model's ``calibration.json`` when there is one; ``False``:
            none; a path: that file (which must exist); a :class:`Calibration`: that one.
        name: The model name as given.
        folder: The model folder, or a no-argument function returning it (called only when a file is looked for).
        base_kind: The reranker's uncalibrated score kind (``ce_sigmoid``/``ce_logit`` can be calibrated).

    Returns:
        The calibration, or ``None``.

    Raises:
        InvalidParameterError: A bad setting, a path that does not exist, or a model whose scores are neither a
            sigmoid nor a logit given an explicit calibration.
        InvalidDocumentError: The file is not a calibration.
    """
    if setting is False:
        return None
    if isinstance(setting, Calibration):
        cal: Calibration | None = setting
    elif setting is None or setting is True or setting == "auto":
        try:
            path = calibration_path(name, folder() if callable(folder) else folder)
        except (OSError, ValueError) as exc:  # a hub model whose folder cannot be found offline: no calibration
            logger.debug("%s: no calibration looked up (%s)", name, exc)
            return None
        cal = None if path is None else Calibration.load(path)
        if cal is not None and base_kind not in ("ce_sigmoid", "ce_logit"):
            logger.warning("%s: not applying %s, fitted on %s scores; this model gives %s", name, path,
                           cal.base_kind, base_kind)  # fmt: skip
            return None
        if cal is not None:
            logger.info("%s: scores calibrated by %s (%s)", name, path, cal.describe())
        return cal
    elif isinstance(setting, (str, os.PathLike)):
        cal = Calibration.load(setting)
    else:
        raise InvalidParameterError(
            f"calibration must be None, 'auto', False, a path or a Calibration, got {setting!r}",
            parameter="calibration",
        )
    if base_kind not in ("ce_sigmoid", "ce_logit"):
        raise InvalidParameterError(
            f"calibration needs a model giving sigmoid or logit scores, {name} gives {base_kind}",
            parameter="calibration",
        )
    return cal
