"""The pipeline spec itself: its parts and the string / dict / TOML forms (grammar: :mod:`..spec`; named
specs and reading any spelling of one: :mod:`.presets`)."""

from __future__ import annotations

import importlib
import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from types import ModuleType
from typing import Any

from ..errors import MissingDependencyError, PipelineSpecError
from ..recall.factory import DEFAULT_RECALL, RECALL_KINDS
from ..rerank.cascade import STAGE_OPTIONS
from ..rerank.fusion import AUTO as AUTO_WEIGHT
from ..rerank.fusion import METHODS as FUSION_METHODS
from ..rerank.onnx import BACKENDS
from ..rerank.windows import LONG_DOCS

__all__ = [
    "FusionSpec",
    "PipelineSpec",
    "RecallSpec",
    "StageSpec",
    "parse_stage_token",
]

DEFAULT_LIMIT = 20  # TwoStagePipeline's and `twostage query`'s defaults
DEFAULT_TOP_K = 5
DEFAULT_FUSION_WEIGHT = 0.9  # FusedReranker's default
DEFAULT_MODEL = "default"  # the token for "no model named": $TWOSTAGE_RERANK_MODEL, else the MiniLM-L6 default
NO_RERANK = "none"
SEPARATOR = ">"
RECALL_OPTIONS = ("rrf_k", "per_arm")
SETTINGS = ("fuse", "top_k", "min_score")

EXAMPLE = "hybrid:100 > default:30@backend=onnx-int8,max_length=64 > default > top_k=5"
EXAMPLE_RECALL = "hybrid:100@rrf_k=60,per_arm=100"
EXAMPLE_STAGE = "default:30@backend=onnx-int8,max_length=64"
EXAMPLE_FUSE = "fuse=rrf:0.9"
EXAMPLE_NO_RERANK = "dense:20 > none > top_k=5"
EXAMPLE_MIN_SCORE = "hybrid:50 > default > top_k=5 > min_score=0.5"
EXAMPLE_DICT = '{"recall": {"kind": "dense", "limit": 20}, "stages": [{"model": "default", "keep": 10}], "top_k": 5}'
EXAMPLE_TOML = 'recall = {kind = "dense", limit = 20} / stages = [{model = "default"}] / top_k = 5, one per line'

_INT = re.compile(r"[0-9]+")
_FLOAT = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_SETTING = re.compile(r"([A-Za-z_][\w-]*)\s*=\s*(.*)")  # `top_k=5`; also catches typos such as `topk=5`
_WHAT = {
    "max_length": "a number of tokens >= 1",
    "window": "a number of tokens >= 1",
    "stride": "a number of tokens >= 1",
}  # how each whole-number token is described in errors


# -- values ---------------------------------------------------------------------------------------------------
def _whole(value: Any, what: str, example: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PipelineSpecError(f"{what} must be {_WHAT.get(what, 'a whole number >= 1')}", value, example)
    return value


def _number(value: Any, what: str, example: str, *, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value >= 0):
        raise PipelineSpecError(f"{what} must be a number >= 0", value, example)
    if value > high:
        raise PipelineSpecError(f"{what} must be between 0 and {high:g}", value, example)
    return float(value)


def _text_whole(where: str, key: str, text: str, example: str) -> int:
    """A whole-number token of a string spec (``30``, not ``30.0``, ``-1`` or ``³``)."""
    if not _INT.fullmatch(text) or int(text) < 1:
        raise PipelineSpecError(f"{where}: {key} must be {_WHAT.get(key, 'a whole number >= 1')}", text, example)
    return int(text)


def _text_number(where: str, key: str, text: str, example: str) -> float:
    if not _FLOAT.fullmatch(text):
        raise PipelineSpecError(f"{where}: {key} must be a number such as 0.9", text, example)
    return float(text)


def _fmt(value: float) -> str:
    """A float as short as it reads back exactly: ``60`` for 60.0, ``0.9``, ``1e-05``."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def _check_model(model: Any) -> str | None:
    """``model`` if it reads back as itself from a stage token; None for ``default``."""
    if model is None or model == DEFAULT_MODEL:
        return None
    if not isinstance(model, str) or not model or model != model.strip() or not model.isprintable():
        problem = "a stage's model is a name or path without spaces or control characters at the ends"
        raise PipelineSpecError(problem, model, EXAMPLE_STAGE)
    head, at, tail = model.rpartition("@")
    clashes = {
        f"'{DEFAULT_MODEL}' and '{NO_RERANK}' are keywords": model.lower() in (DEFAULT_MODEL, NO_RERANK),
        f"a model name cannot contain '{SEPARATOR}'": SEPARATOR in model,
        "a model name ending in ':NUMBER' would read as the stage's keep": re.search(r":[0-9]+$", model) is not None,
        "a model name ending in '@key=value' would read as stage options": bool(at) and "=" in tail,
        "a model name starting with 'name=' would read as a setting": _SETTING.match(model) is not None,
    }
    for problem, clash in clashes.items():
        if clash:
            raise PipelineSpecError(problem, model, EXAMPLE_STAGE)
    return model


def _check_long_docs(value: Any) -> str | None:
    if value is not None and value not in LONG_DOCS:
        raise PipelineSpecError(f"long_docs must be one of {', '.join(LONG_DOCS)}", value, EXAMPLE_STAGE)
    return value


def _check_backend(value: Any, example: str = EXAMPLE_STAGE) -> str | None:
    if value is None:
        return None
    chosen = value.strip().lower() if isinstance(value, str) else value
    if chosen not in BACKENDS:
        raise PipelineSpecError(f"backend must be one of {', '.join(BACKENDS)}", value, example)
    return str(chosen)


@contextmanager
def _context(where: str, example: str | None = None) -> Iterator[None]:
    """Prefix a spec error raised inside with where it happened (and swap the example for the form in use)."""
    try:
        yield
    except PipelineSpecError as exc:
        raise PipelineSpecError(f"{where}: {exc.problem}", exc.token, example or exc.example) from None


# -- the spec -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RecallSpec:
    """Stage 1 of a spec: which recall, and how many candidates it passes on.

    Attributes:
        kind: ``"dense"``, ``"bm25"`` or ``"hybrid"`` (default: hybrid, :data:`DEFAULT_RECALL`).
        limit: Candidates recalled.
        rrf_k: Hybrid only: the RRF constant (None = the hybrid recall's default).
        per_arm: Hybrid only: candidates per arm (None = the hybrid recall's default).

    Raises:
        PipelineSpecError: an unknown kind, a limit below 1, or a hybrid option on another kind.
    """

    kind: str = DEFAULT_RECALL
    limit: int = DEFAULT_LIMIT
    rrf_k: float | None = None
    per_arm: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in RECALL_KINDS:
            raise PipelineSpecError(f"recall must be one of {', '.join(RECALL_KINDS)}", self.kind, EXAMPLE_RECALL)
        _whole(self.limit, "limit", EXAMPLE_RECALL)
        if self.rrf_k is not None:
            object.__setattr__(self, "rrf_k", _number(self.rrf_k, "rrf_k", EXAMPLE_RECALL))
        if self.per_arm is not None:
            _whole(self.per_arm, "per_arm", EXAMPLE_RECALL)
        for name in RECALL_OPTIONS:
            if self.kind != "hybrid" and getattr(self, name) is not None:
                raise PipelineSpecError(f"{name} tunes hybrid recall, not {self.kind}", name, EXAMPLE_RECALL)

    def to_token(self) -> str:
        """The recall step of a spec string, every value written (``hybrid:100@rrf_k=60``)."""
        values = {name: getattr(self, name) for name in RECALL_OPTIONS}
        options = [f"{k}={_fmt(v) if k == 'rrf_k' else v}" for k, v in values.items() if v is not None]  # rrf_k=0 too
        return f"{self.kind}:{self.limit}" + ("@" + ",".join(options) if options else "")

    @classmethod
    def parse(cls, token: str) -> RecallSpec:
        """Read the first step of a spec string; a bad kind, option or value raises :class:`PipelineSpecError`.

        Args:
            token: ``KIND[:LIMIT][@rrf_k=K,per_arm=N]``, e.g. ``"hybrid:100@rrf_k=60"``.
        """
        where = f"recall {token!r}"
        head, at, tail = token.partition("@")
        raw = _parse_options(where, tail, RECALL_OPTIONS, EXAMPLE_RECALL) if at else {}
        kind, colon, depth = head.partition(":")
        if kind not in RECALL_KINDS:
            problem = f"a spec starts with its recall, one of {', '.join(RECALL_KINDS)} (or is a preset name)"
            raise PipelineSpecError(problem, kind, EXAMPLE)
        limit = _text_whole(where, "limit", depth, EXAMPLE_RECALL) if colon else DEFAULT_LIMIT
        options: dict[str, Any] = {}
        if "rrf_k" in raw:
            options["rrf_k"] = _text_number(where, "rrf_k", raw["rrf_k"], EXAMPLE_RECALL)
        if "per_arm" in raw:
            options["per_arm"] = _text_whole(where, "per_arm", raw["per_arm"], EXAMPLE_RECALL)
        with _context(where):
            return cls(kind, limit, **options)


@dataclass(frozen=True)
class StageSpec:
    """One rerank stage of a spec.

    Attributes:
        model: What ``make_reranker`` takes (a folder, hub id, ``cohere:NAME``...); None or ``"default"``: the default.
        keep: How many of the best hits the stage passes on (None = all).
        backend: A cross-encoder's engine, ``auto``, ``onnx``, ``onnx-int8`` or ``torch`` (None = the default).
        max_length: A cross-encoder's tokens per (query, passage) pair (None = the model's).
        long_docs: A cross-encoder's scoring of long passages, ``first``, ``max`` or ``top2mean`` (None = first).
        window: Tokens per window with ``long_docs`` max/top2mean (None = what fits beside the query).
        stride: Tokens between window starts (None = 60% of the window).

    Raises:
        PipelineSpecError: a model name the grammar would misread, a keep, max_length, window or stride below 1,
            an unknown backend or long_docs.
    """

    model: str | None = None
    keep: int | None = None
    backend: str | None = None
    max_length: int | None = None
    long_docs: str | None = None
    window: int | None = None
    stride: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", _check_model(self.model))
        if self.keep is not None:
            _whole(self.keep, "keep", EXAMPLE_STAGE)
        object.__setattr__(self, "backend", _check_backend(self.backend))
        _check_long_docs(self.long_docs)
        for name in ("max_length", "window", "stride"):
            if getattr(self, name) is not None:
                _whole(getattr(self, name), name, EXAMPLE_STAGE)

    @property
    def options(self) -> dict[str, Any]:
        """The engine options set on this stage (``backend``, ``max_length``, ``long_docs``...), for
        ``make_reranker``."""
        return {name: getattr(self, name) for name in STAGE_OPTIONS if getattr(self, name) is not None}

    def to_token(self) -> str:
        """The stage step of a spec string (``default:30@backend=onnx-int8``)."""
        token = (self.model or DEFAULT_MODEL) + (f":{self.keep}" if self.keep is not None else "")
        return token + ("@" + ",".join(f"{k}={v}" for k, v in self.options.items()) if self.options else "")

    @classmethod
    def parse(cls, token: str) -> StageSpec:
        """Read a stage step of a spec string; what :func:`parse_stage_token` or the class refuses raises
        :class:`PipelineSpecError`.

        Args:
            token: ``MODEL[:KEEP][@backend=B,max_length=N]`` (``default`` for the default model).
        """
        model, keep, options = parse_stage_token(token)
        with _context(f"stage {token!r}"):
            return cls(model, keep, **options)


@dataclass(frozen=True)
class FusionSpec:
    """Fuse the last stage's order with its input order (a :class:`~twostage_integrations.FusedReranker`).

    Attributes:
        method: ``"rrf"`` (of ranks) or ``"minmax"`` (of scores).
        weight: 0..1; 1 = the reranker's order, 0 = the input order; or ``"auto"``: chosen without labels from
            pseudo-queries of the collection (``fuse=rrf:auto``, see docs/evaluation.md).

    Raises:
        PipelineSpecError: An unknown method, or a weight that is neither a number in 0..1 nor ``"auto"``.
    """

    method: str = "rrf"
    weight: float | str = DEFAULT_FUSION_WEIGHT

    def __post_init__(self) -> None:
        if self.method not in FUSION_METHODS:
            raise PipelineSpecError(
                f"fusion method must be one of {', '.join(FUSION_METHODS)}", self.method, EXAMPLE_FUSE
            )
        if isinstance(self.weight, str):
            if self.weight != AUTO_WEIGHT:
                raise PipelineSpecError("weight must be a number between 0 and 1, or auto", self.weight, EXAMPLE_FUSE)
        else:
            object.__setattr__(self, "weight", _number(self.weight, "weight", EXAMPLE_FUSE, high=1.0))

    @property
    def auto(self) -> bool:
        """Whether the weight is chosen per corpus (``"auto"``)."""
        return self.weight == AUTO_WEIGHT

    def to_token(self) -> str:
        """The fusion step of a spec string (``fuse=rrf:0.9``, ``fuse=rrf:auto``)."""
        weight = self.weight if isinstance(self.weight, str) else _fmt(self.weight)
        return f"fuse={self.method}:{weight}"

    @classmethod
    def parse(cls, value: str) -> FusionSpec:
        """Read the fusion step of a spec string; a bad method or weight raises :class:`PipelineSpecError`.

        Args:
            value: What follows ``fuse=``: ``METHOD[:WEIGHT]``, e.g. ``"rrf:0.9"`` or ``"rrf:auto"``.
        """
        method, colon, weight = value.partition(":")
        if method not in FUSION_METHODS:
            raise PipelineSpecError(f"fuse: method must be one of {', '.join(FUSION_METHODS)}", method, EXAMPLE_FUSE)
        if not colon:
            return cls(method, DEFAULT_FUSION_WEIGHT)
        if weight == AUTO_WEIGHT:
            return cls(method, AUTO_WEIGHT)
        if not _FLOAT.fullmatch(weight):
            raise PipelineSpecError("fuse: weight must be a number such as 0.9, or auto", weight, EXAMPLE_FUSE)
        with _context("fuse"):
            return cls(method, float(weight))


@dataclass(frozen=True)
class PipelineSpec:
    """A whole pipeline: recall, rerank stages, fusion and ``top_k`` (the forms it reads: :mod:`..spec`).
    Immutable; ``dataclasses.replace(spec, top_k=10)`` checks the result again.

    Attributes:
        recall: Stage 1.
        stages: The rerank stages in order (a list is stored as a tuple); empty = no rerank.
        fusion: Fusion of the last stage's order with its input order, or None.
        top_k: Hits returned.
        min_score: Hits scored below it are dropped (``None``: keep ``top_k``); see docs/scores.md for each
            kind's range (checked against the last stage's kind when the pipeline runs).

    Raises:
        PipelineSpecError: a part of the wrong type, fusion without a stage, a stage keeping more than it gets,
            or ``top_k`` above what the last step passes on.
    """

    recall: RecallSpec = field(default_factory=RecallSpec)
    stages: tuple[StageSpec, ...] = ()
    fusion: FusionSpec | None = None
    top_k: int = DEFAULT_TOP_K
    min_score: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.recall, RecallSpec):
            raise PipelineSpecError("recall must be a RecallSpec", type(self.recall).__name__, EXAMPLE_RECALL)
        if isinstance(self.stages, (str, bytes)) or not isinstance(self.stages, Sequence):
            raise PipelineSpecError("stages must be a list of StageSpec", type(self.stages).__name__, EXAMPLE)
        object.__setattr__(self, "stages", tuple(self.stages))
        if not all(isinstance(s, StageSpec) for s in self.stages):
            raise PipelineSpecError("stages must be StageSpec objects", self.stages, EXAMPLE)
        if self.fusion is not None and not isinstance(self.fusion, FusionSpec):
            raise PipelineSpecError("fusion must be a FusionSpec or None", type(self.fusion).__name__, EXAMPLE_FUSE)
        if self.fusion is not None and not self.stages:
            raise PipelineSpecError("fusion needs a rerank stage to fuse", self.fusion.to_token(), EXAMPLE)
        _whole(self.top_k, "top_k", EXAMPLE)
        passed, source = self.recall.limit, f"recall {self.recall.to_token()}"
        for stage in self.stages:
            if stage.keep is not None and stage.keep > passed:
                raise PipelineSpecError(
                    f"a stage keeps more than the {passed} it gets from {source}", stage.to_token(), EXAMPLE
                )
            if stage.keep is not None:
                passed, source = stage.keep, f"stage {stage.to_token()}"
        if self.top_k > passed:
            raise PipelineSpecError(f"top_k is more than the {passed} hits {source} passes on", self.top_k, EXAMPLE)
        if self.min_score is not None:
            value = self.min_score
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise PipelineSpecError("min_score must be a number", value, EXAMPLE_MIN_SCORE)
            object.__setattr__(self, "min_score", float(value))

    # -- the string form --
    @classmethod
    def parse(cls, text: str) -> PipelineSpec:
        """Read a spec string (see the module docstring).

        Args:
            text: e.g. ``"hybrid:100 > default:30@backend=onnx-int8 > default > top_k=5"``.

        Raises:
            PipelineSpecError: the first token that cannot be read, named, with an example.
        """
        if not isinstance(text, str) or not text.strip():
            raise PipelineSpecError("empty pipeline spec", text, EXAMPLE)
        steps = [step.strip() for step in text.split(SEPARATOR)]
        if not all(steps):
            raise PipelineSpecError(f"empty step: a '{SEPARATOR}' at the start or end, or two in a row", text, EXAMPLE)
        recall = RecallSpec.parse(steps[0])
        stages: list[StageSpec | None] = []
        settings: dict[str, str] = {}
        for step in steps[1:]:
            setting = _SETTING.fullmatch(step)
            if setting:
                key, value = setting.groups()
                if key not in SETTINGS or key in settings:
                    problem = "after the stages come fuse=METHOD:WEIGHT and top_k=N (then min_score=X), once each"
                    raise PipelineSpecError(problem, step, EXAMPLE)
                settings[key] = value
            elif settings:
                raise PipelineSpecError("stages come before fuse=... and top_k=...", step, EXAMPLE)
            else:
                stages.append(None if step == NO_RERANK else StageSpec.parse(step))
        if not stages or (None in stages and len(stages) > 1):
            problem = f"a spec names its rerank stages after the recall, or '{NO_RERANK}' alone for none"
            raise PipelineSpecError(problem, text, EXAMPLE_NO_RERANK)
        fusion = FusionSpec.parse(settings["fuse"]) if "fuse" in settings else None
        top_k = DEFAULT_TOP_K
        if "top_k" in settings:
            top_k = _text_whole(f"setting 'top_k={settings['top_k']}'", "top_k", settings["top_k"], EXAMPLE)
        min_score = None
        if "min_score" in settings:  # a logit threshold may be negative
            text = settings["min_score"]
            sign = -1.0 if text.startswith("-") else 1.0
            min_score = sign * _text_number(
                "setting 'min_score'", "min_score", text.removeprefix("-"), EXAMPLE_MIN_SCORE
            )
        return cls(recall, tuple(s for s in stages if s is not None), fusion, top_k, min_score)

    def to_string(self) -> str:
        """The canonical spec string (every value written, so it reads back as this spec)."""
        steps = [self.recall.to_token(), *(s.to_token() for s in self.stages)]
        if not self.stages:
            steps.append(NO_RERANK)
        if self.fusion is not None:
            steps.append(self.fusion.to_token())
        steps.append(f"top_k={self.top_k}")
        if self.min_score is not None:
            steps.append(f"min_score={_fmt(self.min_score)}")
        return f" {SEPARATOR} ".join(steps)

    def __str__(self) -> str:
        return self.to_string()

    # -- the dict and TOML forms --
    def to_dict(self) -> dict[str, Any]:
        """``{"recall": {...}, "stages": [{...}, ...], "fusion": {...}, "top_k": N}``: unset values left out
        (TOML has no null), the default model written as ``"default"``; JSON- and TOML-ready."""
        out: dict[str, Any] = {"recall": _set_fields(self.recall)}
        out["stages"] = [{"model": s.model or DEFAULT_MODEL, **_set_fields(s)} for s in self.stages]
        if self.fusion is not None:
            out["fusion"] = _set_fields(self.fusion)
        out["top_k"] = self.top_k
        if self.min_score is not None:
            out["min_score"] = self.min_score
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PipelineSpec:
        """Read the dict form.

        Args:
            data: What :meth:`to_dict` writes; ``recall`` with its ``kind``, and ``stages``, are required (an
                empty list means no rerank).

        Raises:
            PipelineSpecError: an unknown or missing key, or a bad value (named with its path).
        """
        keys = ("recall", "stages", "fusion", "top_k", "min_score")
        _check_keys(data, "pipeline", keys, required=("recall", "stages"))
        recall = _section(RecallSpec, data["recall"], "recall", required=("kind",))
        stages = data["stages"]
        if isinstance(stages, (str, bytes, Mapping)) or not isinstance(stages, Sequence):
            raise PipelineSpecError("stages must be a list of stage tables ([] for none)", stages, EXAMPLE_DICT)
        parsed = tuple(_section(StageSpec, s, f"stages[{i}]") for i, s in enumerate(stages))
        fusion = _section(FusionSpec, data["fusion"], "fusion") if data.get("fusion") is not None else None
        with _context("pipeline", EXAMPLE_DICT):
            return cls(recall, parsed, fusion, data.get("top_k", DEFAULT_TOP_K), data.get("min_score"))

    def to_toml(self) -> str:
        """The dict form as a TOML document (``[recall]``, ``[[stages]]``, ``[fusion]`` tables)."""
        data = self.to_dict()
        lines = [f"top_k = {data['top_k']}"] + (["stages = []"] if not self.stages else [])
        if self.min_score is not None:
            lines.insert(1, f"min_score = {_fmt(self.min_score)}")
        tables = [("[recall]", data["recall"]), *(("[[stages]]", s) for s in data["stages"])]
        if "fusion" in data:
            tables.append(("[fusion]", data["fusion"]))
        for header, values in tables:
            lines += ["", header, *(f"{k} = {_toml_value(v)}" for k, v in values.items())]
        return "\n".join(lines) + "\n"

    @classmethod
    def from_toml(cls, text: str) -> PipelineSpec:
        """Read a TOML document holding the dict form.

        Args:
            text: The document, as :meth:`to_toml` writes it.

        Raises:
            PipelineSpecError: the text is not TOML, or its tables are not a spec.
            MissingDependencyError: Python 3.10 without ``tomli``.
        """
        toml = _toml_reader()
        try:
            data = toml.loads(text)
        except toml.TOMLDecodeError as exc:
            line = re.search(r"line (\d+)", str(exc))
            lines = text.splitlines()
            bad = lines[int(line.group(1)) - 1] if line and 0 < int(line.group(1)) <= len(lines) else text
            raise PipelineSpecError(f"pipeline TOML does not parse ({exc})", bad, EXAMPLE_TOML) from None
        with _context("pipeline TOML", EXAMPLE_TOML):
            return cls.from_dict(data)


def _set_fields(part: Any) -> dict[str, Any]:
    return {k: v for k, v in asdict(part).items() if v is not None}


def _check_keys(data: Any, where: str, allowed: Sequence[str], *, required: Sequence[str] = ()) -> None:
    if not isinstance(data, Mapping):
        raise PipelineSpecError(f"{where} must be a table/dict", data, EXAMPLE_DICT)
    for key in data:
        if key not in allowed:
            raise PipelineSpecError(f"{where}: unknown key (known: {', '.join(allowed)})", key, EXAMPLE_DICT)
    for key in required:
        if key not in data:
            raise PipelineSpecError(f"{where}: missing key", key, EXAMPLE_DICT)


def _section(cls: Any, data: Any, where: str, *, required: Sequence[str] = ()) -> Any:
    """One table of the dict form as ``cls`` (RecallSpec, StageSpec, FusionSpec); errors name its path."""
    _check_keys(data, where, [f.name for f in fields(cls)], required=required)
    with _context(where, EXAMPLE_DICT):
        return cls(**data)


def _toml_value(value: Any) -> str:
    # Strings are printable (checked by StageSpec), so JSON's escapes of " and \ are TOML's too.
    return (
        json.dumps(value, ensure_ascii=False)
        if isinstance(value, str)
        else _fmt(value)
        if isinstance(value, float)
        else str(value)
    )


def _toml_reader() -> ModuleType:
    """``tomllib`` (Python 3.11+), else ``tomli``."""
    for name in ("tomllib", "tomli"):
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError:
            continue
    raise MissingDependencyError("reading a TOML pipeline spec on Python 3.10 needs tomli: pip install tomli")


def _parse_options(where: str, tail: str, allowed: Sequence[str], example: str) -> dict[str, str]:
    """``key=value,key=value`` after a step's ``@``, keys from ``allowed``, each once; values as written."""
    options: dict[str, str] = {}
    for item in tail.split(","):
        key, eq, value = (x.strip() for x in item.partition("="))
        if not eq or key not in allowed or not value or key in options:
            problem = f"{where}: options after @ are {', '.join(k + '=...' for k in allowed)} (each once)"
            raise PipelineSpecError(problem, item, example)
        options[key] = value
    return options


def parse_stage_token(token: str, label: str = "stage") -> tuple[str, int | None, dict[str, Any]]:
    """``MODEL[:KEEP][@backend=B,max_length=N]`` -> ``(MODEL, KEEP, options)``: one stage, as ``eval``/``bench
    --stage`` take it and a spec string writes it (``default`` is returned as written).

    A ``:`` suffix that is not a number belongs to the model (``rerankers:/path:cross-encoder`` keeps all it
    gets); an ``@`` not followed by ``key=value`` options belongs to the model too (``/m/v1@2/ce:20``).

    Args:
        token: The stage.
        label: How errors name it (``"--stage"`` for the CLI option).

    Returns:
        The model, the keep (None = all) and the options set (``backend`` lower-cased, ``max_length`` an int).

    Raises:
        PipelineSpecError: an unknown or repeated option, a max_length or keep below 1, an unknown backend,
            or no model.
    """
    where = f"{label} {token!r}"
    options: dict[str, Any] = {}
    head, at, tail = token.rpartition("@")
    if at and "=" in tail:
        for key, value in _parse_options(where, tail, STAGE_OPTIONS, EXAMPLE_STAGE).items():
            if key in ("max_length", "window", "stride"):
                options[key] = _text_whole(where, key, value, EXAMPLE_STAGE)
            elif key == "long_docs":
                with _context(where):
                    options[key] = _check_long_docs(value)
            else:
                with _context(where):
                    options[key] = _check_backend(value)
        token = head
    model, colon, keep = token.rpartition(":")
    if not colon or not _INT.fullmatch(keep):
        model, count = token, None
    else:
        count = _text_whole(where, "keep", keep, EXAMPLE_STAGE)
    if not model.strip():
        raise PipelineSpecError(
            f"{where}: a stage starts with its model ('{DEFAULT_MODEL}' for the default)", model, EXAMPLE_STAGE
        )
    return model, count, options
