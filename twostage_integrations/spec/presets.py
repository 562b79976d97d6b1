"""Named pipeline specs (presets) and reading any spelling of a spec: string, dict, TOML file or preset name."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import PipelineSpecError
from ..recall.factory import RECALL_KINDS
from .core import EXAMPLE, PipelineSpec, _context

__all__ = ["PRESETS", "load_toml", "parse_spec", "resolve"]

# Named specs. A preset is added here with its measured numbers in docs/ (docs/pipeline_spec.md lists them).
PRESETS: dict[str, str] = {
    # One exact stage: hybrid recall of 20, the default cross-encoder on the default engine (auto: the faster
    # exact engine, ONNX fp32 or torch, unless $TWOSTAGE_RERANK_BACKEND says otherwise), top 5.
    "exact": "hybrid:20 > default > top_k=5",
}

_PRESET_NAME = re.compile(r"[A-Za-z][\w-]*")


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
