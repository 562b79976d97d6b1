"""The pipeline rows of ``twostage bench --preset A,B`` / ``--pipeline SPEC``: which specs run, what each row is
called, and which engine each one ran.

The table leads with the default pipeline (what ``twostage query`` runs with no flags: the spec defaults), then
the rows asked for, then the ``exact`` preset when it was not asked for: every row's top-k is compared with
``exact``'s (:data:`REFERENCE_PRESET`), and the native and sentence-transformers peers rebuild that pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..errors import InvalidParameterError
from ..spec import PRESETS, PipelineSpec, default_stages, resolve
from ..spec.build import SpecLike
from ..spec.presets import with_long_docs

REFERENCE_PRESET = "exact"  # the rows' same-top-k reference: today's exact (fp32, one cross-encoder) pipeline
DEFAULT_SUFFIX = " (default)"
# CrossEncoderReranker.backend -> what runs the model
ENGINE_LABELS = {"onnx": "ONNX Runtime fp32", "onnx-int8": "ONNX Runtime int8", "torch": "torch"}


@dataclass(frozen=True)
class SpecRow:
    """One pipeline row: its label (a preset name, else the spec string), its spec, and whether it is the default."""

    label: str
    spec: PipelineSpec
    default: bool = False

    @property
    def name(self) -> str:
        """The row's system name in the report: the label, ``(default)`` appended for the default pipeline."""
        return self.label + (DEFAULT_SUFFIX if self.default else "")


def default_spec() -> PipelineSpec:
    """What ``twostage query`` runs with no flags: the default recall and limit, the default preset's rerank
    stages (:func:`~twostage_integrations.spec.default_stages`), the default top_k.

    Returns:
        The spec.
    """
    return PipelineSpec(stages=default_stages())


def at_limit(spec: PipelineSpec, limit: int | None) -> PipelineSpec:
    """``spec`` recalling ``limit`` candidates instead of its own depth (None: ``spec`` unchanged).

    >>> str(at_limit(resolve("fast"), 50))
    'hybrid:50 > default@backend=onnx-int8 > top_k=5'
    """
    return spec if limit is None else replace(spec, recall=replace(spec.recall, limit=limit))


def spec_long_docs(spec: PipelineSpec, long_docs: str | None) -> PipelineSpec:
    """``spec`` with ``long_docs`` on every stage that names none (``bench --long-docs``, as ``query --long-docs``:
    :func:`~twostage_integrations.spec.presets.with_long_docs`); None: ``spec`` unchanged.

    >>> str(spec_long_docs(resolve("fast"), "max"))
    'hybrid:20 > default@backend=onnx-int8,long_docs=max > top_k=5'
    """
    return spec if long_docs is None else replace(spec, stages=with_long_docs(spec.stages, long_docs))


def spec_label(spec: PipelineSpec, *, any_limit: bool = False) -> str:
    """The name of the first preset that reads as ``spec``, else the spec string.

    Args:
        spec: A spec.
        any_limit: Also name a preset recalling another number of candidates (``bench --limits``: each table
            sets every row's depth, so ``fast`` at 50 is still ``fast``).

    Returns:
        The label.
    """
    for name, text in PRESETS.items():
        preset = resolve(text)
        if (at_limit(preset, spec.recall.limit) if any_limit else preset) == spec:
            return name
    return str(spec)


def spec_rows(
    pipelines: Sequence[SpecLike] | None,
    default: PipelineSpec | None = None,
    limit: int | None = None,
    long_docs: str | None = None,
) -> list[SpecRow]:
    """The rows to time: the default pipeline first, then ``pipelines`` in order, then ``exact`` if missing;
    specs that read the same are one row.

    Args:
        pipelines: Preset names, spec strings, ``.toml`` paths, dicts or specs (see
            :func:`~twostage_integrations.spec.resolve`). None or empty: the default pipeline (and ``exact``).
        default: The default pipeline (default: :func:`default_spec`).
        limit: Recall this many candidates in every row (:func:`at_limit`); None: each spec's own depth.
        long_docs: Score long passages this way in every stage that names no ``long_docs``
            (:func:`spec_long_docs`); None: as each spec says.

    Returns:
        The rows, each spec once.

    Raises:
        InvalidParameterError: ``pipelines`` is a string, or the rows return different top_k (their top-k are
            compared); a :class:`~twostage_integrations.errors.PipelineSpecError` for a spec that cannot be read.
    """
    if isinstance(pipelines, (str, bytes)):
        raise InvalidParameterError(f"pipelines must be a list of presets or specs, got the string {pipelines!r}")
    first = default if default is not None else default_spec()
    specs = [first, *(resolve(p) for p in pipelines or ())]
    if REFERENCE_PRESET in PRESETS:
        specs.append(resolve(REFERENCE_PRESET))
    rows: list[SpecRow] = []
    for spec in (spec_long_docs(at_limit(s, limit), long_docs) for s in specs):
        if all(row.spec != spec for row in rows):
            rows.append(SpecRow(spec_label(spec, any_limit=limit is not None), spec, default=not rows))
    other = next((row for row in rows if row.spec.top_k != first.top_k), None)
    if other is not None:
        raise InvalidParameterError(
            f"every row's top-k is compared with the others', so all must keep the same top_k: {other.label!r} keeps "
            f"{other.spec.top_k}, the default pipeline {first.top_k}; write top_k={first.top_k} in that spec"
        )
    return rows


def reference_row(rows: Sequence[SpecRow]) -> SpecRow:
    """The row every other row's top-k is compared with: ``exact``'s, else (no such preset) the default's.

    Args:
        rows: From :func:`spec_rows`.

    Returns:
        The reference row.
    """
    return next((row for row in rows if row.label == REFERENCE_PRESET), rows[0])


def cross_encoders(reranker: Any) -> list[Any]:
    """Our cross-encoders inside a spec's reranker (a Cascade, a fused stage, or one reranker), each once.

    Args:
        reranker: ``TwoStagePipeline.reranker`` (None: no rerank).

    Returns:
        The :class:`~twostage_integrations.CrossEncoderReranker` objects, in stage order.
    """
    from ..rerank.cross_encoder import CrossEncoderReranker

    if reranker is None:
        return []
    if isinstance(reranker, CrossEncoderReranker):
        return [reranker]
    inner: list[Any] = [r for r, _ in getattr(reranker, "stages", [])] or [getattr(reranker, "reranker", None)]
    found = [ce for r in inner if r is not None for ce in cross_encoders(r)]
    return list({id(ce): ce for ce in found}.values())


def engine_label(reranker: Any) -> str:
    """What runs a spec row's rerank, read from the built reranker: e.g. ``ONNX Runtime int8 → ONNX Runtime fp32``
    for a two-stage cascade, ``none`` without rerank, the model name for a hosted reranker.

    Args:
        reranker: ``TwoStagePipeline.reranker``.

    Returns:
        The label.
    """
    if reranker is None:
        return "none"
    stages = [r for r, _ in getattr(reranker, "stages", [])] or [reranker]
    labels = []
    for stage in stages:
        ces = cross_encoders(stage)
        labels.append(ENGINE_LABELS.get(ces[0].backend, ces[0].backend) if ces else getattr(stage, "name", "?"))
    return " → ".join(labels)
