"""Named pipeline specs (presets) and reading any spelling of a spec: string, dict, TOML file or preset name."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import PipelineSpecError
from ..recall.factory import RECALL_KINDS
from .core import EXAMPLE, PipelineSpec, StageSpec, _context

__all__ = ["DEFAULT_PRESET", "PRESETS", "default_stages", "load_toml", "parse_spec", "resolve", "with_long_docs"]

# Named specs. A preset is added here with its measured numbers in docs/ (docs/pipeline_spec.md lists them).
PRESETS: dict[str, str] = {
    # One exact stage: hybrid recall of 20, the default cross-encoder on the default engine (auto: the faster
    # exact engine, ONNX fp32 or torch, unless $TWOSTAGE_RERANK_BACKEND says otherwise), top 5.
    "exact": "hybrid:20 > default > top_k=5",
    # The same, scored by the int8 engine. nDCG@10 within 0.005 of exact at limits 20, 50 and 100 on SciFact test
    # (300 queries) and on label-free Python-docs queries (287): the worst gap measured is -0.0028 (Python docs,
    # limit 100). Its speed-up depends on the CPU's int8 support: 2.1x the fp32 engine's pairs/s on an AMD EPYC
    # with AVX-512 VNNI, within timing noise of fp32 on an AVX2-only one (benchmarks/results/presets.md).
    "fast": "hybrid:20 > default@backend=onnx-int8 > top_k=5",
    # fast, scoring every token window of a long passage and keeping its best (evidence spans on every hit).
    # SciFact test (300 queries, abstracts mostly longer than 192 tokens): nDCG@10 0.7301 against fast's 0.7064,
    # at 3.3x the pairs (2.96x fast's rerank time, measured in the same conditions); label-free Python docs (287
    # queries, mostly short): 0.6325 against 0.6317 at 1.22x. Not the default for that cost (docs/stage2.md).
    "long-docs": "hybrid:20 > default@backend=onnx-int8,long_docs=max > top_k=5",
}

#: What runs when nothing names the rerank stages (no --rerank-model/--stage/--rerank-backend, no reranker= in the
#: adapters). The rule: the fastest preset, at the default recall depth of 20, whose nDCG@10 stays within 0.005 of
#: ``exact`` on both measured domains at limits 20, 50 and 100. ``fast`` qualifies everywhere and is the cheapest at
#: 20 (the int8-at-128-tokens prefilter that also qualifies scores every candidate twice at that depth and only
#: pays from 50 candidates up). Where int8 gains nothing (no VNNI) it costs nothing either: within noise of fp32.
DEFAULT_PRESET = "fast"

ONNX_ENGINES = ("onnx", "onnx-int8")  # a default using these needs the onnx extra; without it: one plain stage
_PRESET_NAME = re.compile(r"[A-Za-z][\w-]*")


def default_stages(*, top_k: int | None = None, long_docs: str | None = None) -> tuple[StageSpec, ...]:
    """The rerank stages of :data:`DEFAULT_PRESET`, or one stage of the default model when the preset's engine
    options cannot apply: ``$TWOSTAGE_RERANK_BACKEND`` names an engine (the user's pick wins), the default
    model (``$TWOSTAGE_RERANK_MODEL``) is not a local cross-encoder (a Cohere or Voyage name), or the preset
    names an ONNX engine and the ``onnx`` extra (onnxruntime, tokenizers, onnx) is not installed.

    Args:
        top_k: Hits the pipeline returns: a stage keeping fewer keeps this many instead (``--top-k 20`` over a
            prefilter keeping 12 is not refused).
        long_docs: Scoring of long passages for stages that name none (``--long-docs``).

    >>> [str(s) for s in default_stages()]  # doctest: +SKIP
    ['default']
    """
    from ..config import TWOSTAGE_RERANK_BACKEND
    from ..models import resolve_rerank_model
    from ..rerank.onnx import exact_engines
    from ..rerank.registry import CROSS_ENCODER, route_for

    plain = (StageSpec(None),)
    stages = PipelineSpec.parse(PRESETS[DEFAULT_PRESET]).stages
    if stages != plain and (
        TWOSTAGE_RERANK_BACKEND.value()
        or route_for(resolve_rerank_model(None)).kind != CROSS_ENCODER
        or (any(s.backend in ONNX_ENGINES for s in stages) and "onnx" not in exact_engines())
    ):
        stages = plain  # the user's engine, a hosted model, or no ONNX engine installed (`pip install ...[onnx]`)
    if top_k is not None:
        stages = tuple(replace(s, keep=max(s.keep, top_k)) if s.keep is not None else s for s in stages)
    return with_long_docs(stages, long_docs)


def with_long_docs(stages: tuple[StageSpec, ...], long_docs: str | None) -> tuple[StageSpec, ...]:
    """``stages`` with ``long_docs`` on every stage that names none (``--long-docs``).

    Args:
        stages: Rerank stages.
        long_docs: ``first``, ``max`` or ``top2mean``; None: ``stages`` unchanged.

    Returns:
        The stages.
    """
    if long_docs is None:
        return stages
    return tuple(s if s.long_docs else replace(s, long_docs=long_docs) for s in stages)


def parse_spec(text: str) -> PipelineSpec:
    """:meth:`PipelineSpec.parse` (the same errors).

    Args:
        text: A spec string, e.g. ``"dense:20 > default > top_k=5"``.
    """
    return PipelineSpec.parse(text)


def load_toml(path: str | os.PathLike[str]) -> PipelineSpec:
    """Read a TOML file holding a spec's dict form.

    Args:
        path: The file (``~`` is expanded).

    Raises:
        PipelineSpecError: no such file, or its contents are not a spec.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise PipelineSpecError("no such pipeline TOML file", str(path), "pipeline.toml (see docs/pipeline_spec.md)")
    with _context(f"{file}"):
        return PipelineSpec.from_toml(file.read_text(encoding="utf-8"))


def resolve(spec: PipelineSpec | Mapping[str, Any] | str | os.PathLike[str]) -> PipelineSpec:
    """Any spelling of a spec as a :class:`PipelineSpec`.

    Args:
        spec: A spec, its dict form, a preset name (:data:`PRESETS`), a ``.toml`` file, or a spec string.

    Raises:
        PipelineSpecError: an unknown preset, or a spec that cannot be read.
    """
    if isinstance(spec, PipelineSpec):
        return spec
    if isinstance(spec, Mapping):
        return PipelineSpec.from_dict(spec)
    if isinstance(spec, os.PathLike) or (isinstance(spec, str) and spec.strip().endswith(".toml")):
        return load_toml(spec)
    if not isinstance(spec, str):
        raise PipelineSpecError(
            "a pipeline spec is a string, dict, TOML file or preset name", type(spec).__name__, EXAMPLE
        )
    name = spec.strip()
    if name in PRESETS:
        return PipelineSpec.parse(PRESETS[name])
    if _PRESET_NAME.fullmatch(name) and name not in RECALL_KINDS:
        raise PipelineSpecError(f"unknown pipeline preset (presets: {', '.join(PRESETS)})", name, next(iter(PRESETS)))
    return PipelineSpec.parse(spec)
