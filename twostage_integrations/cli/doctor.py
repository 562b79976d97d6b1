"""``twostage doctor``: this machine, its cross-encoder engines, the picks of ``backend=auto`` and the ONNX cache.

Imports nothing heavy at CLI import time: the engine code loads when the command runs, and torch only with
``--retime`` (timing torch loads it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from .app import RerankModelOpt, app, friendly_errors


def _folder_size(folder: Path) -> tuple[int, int]:
    """(files, bytes) under ``folder`` (0, 0 when it does not exist)."""
    files = [p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []
    return len(files), sum(p.stat().st_size for p in files)


def doctor_report(*, rerank_model: str | None = None, retime: bool = False) -> dict[str, Any]:
    """What ``twostage doctor`` shows, as a JSON-ready dict.

    Args:
        rerank_model: The model ``retime`` times (None: the default cross-encoder).
        retime: Time the engines for that model again (its default settings) and replace its cached pick.

    Returns:
        ``machine``, ``packages``, ``engines`` (the exact engines ``auto`` chooses among), ``default_backend``,
        ``picks`` (cached, oldest first), ``cache`` (the ONNX cache folder, its files and bytes) and, with
        ``retime``, ``retimed`` (the new pick).

    Raises:
        InvalidParameterError: ``$TWOSTAGE_RERANK_BACKEND`` names no engine.
    """
    from ..rerank import autopick
    from ..rerank.onnx import exact_engines, resolve_backend

    report: dict[str, Any] = {}
    if retime:
        report["retimed"] = _retime(rerank_model)
    folder = autopick.cache_dir()
    files, size = _folder_size(folder)
    report = {
        "machine": autopick.machine_info(),
        "packages": autopick.package_versions(),
        "engines": exact_engines(),
        "default_backend": resolve_backend(None),
        "picks": autopick.describe_picks(),
        "cache": {"dir": str(folder), "files": files, "bytes": size, "picks_file": str(autopick.picks_file())},
        **report,
    }
    return report


def _retime(rerank_model: str | None) -> dict[str, Any]:
    from ..rerank.autopick import retiming
    from ..rerank.cross_encoder import CrossEncoderReranker

    with retiming():
        reranker = CrossEncoderReranker(rerank_model, backend="auto")
    pick = reranker.engine_pick
    return {
        "model": reranker.name,
        "backend": reranker.backend,
        "source": pick.source if pick is not None else "only",
        "pairs_per_s": dict(pick.pairs_per_s) if pick is not None else {},
        "max_length": reranker.max_length,
    }


def _speeds(speeds: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.1f} pairs/s" for name, value in sorted(speeds.items())) or "not timed"


def render_report(report: dict[str, Any]) -> str:
    """The report as the lines ``twostage doctor`` prints.

    Args:
        report: :func:`doctor_report`'s dict.

    Returns:
        Text, one fact per line.
    """
    m, packages = report["machine"], report["packages"]
    lines = [
        f"machine: {m['cpu']}; {m['usable_cores']} cores usable ({m['physical_cores']} physical, "
        f"{m['logical_cores']} logical); speed flags: {' '.join(m['flags']) or 'none of note'}",
        "packages: " + ", ".join(f"{k} {v}" for k, v in packages.items() if v),
        "not installed: " + (", ".join(k for k, v in packages.items() if not v) or "-"),
        f"exact engines backend auto chooses among: {', '.join(report['engines']) or 'none'} "
        f"(onnx-int8 only when asked for); default backend: {report['default_backend']}",
    ]
    retimed = report.get("retimed")
    if retimed:
        lines.append(
            f"retimed {retimed['model']} (max_length {retimed['max_length']}): {retimed['backend']} "
            f"({retimed['source']}; {_speeds(retimed['pairs_per_s'])})"
        )
    picks = report["picks"]
    lines.append(f"engine picks ({report['cache']['picks_file']}): {len(picks) or 'none yet'}")
    for p in picks:
        choice = p["pick"]
        if p["pick_torch_loaded"] != choice:  # within the torch-free margin: torch wins once it is loaded anyway
            choice += f" ({p['pick_torch_loaded']} in a process that imported torch)"
        stale = "" if p["current"] else "; stale (other CPU, cores or versions): timed again on next use"
        lines.append(
            f"  {p['model']} @max_length={p['max_length']}: {choice}; {_speeds(p['pairs_per_s'])}; "
            f"timed {p['timed_at']}{stale}"
        )
    cache = report["cache"]
    lines.append(f"ONNX cache: {cache['dir']} ({cache['files']} files, {cache['bytes'] / 2**20:.1f} MiB)")
    return "\n".join(lines)


@app.command()
@friendly_errors
def doctor(
    rerank_model: RerankModelOpt = None,
    retime: Annotated[
        bool,
        typer.Option(
            "--retime", help="Time the engines again for --rerank-model (default settings) and replace its pick."
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Show what runs the cross-encoder here: the CPU (model, cores, AVX-512/AMX flags), the engines installed and
    their versions, the engine picks backend auto cached (with the pairs/s measured), and the ONNX cache folder.

    backend auto (the default) times torch and ONNX fp32 once per machine and model and keeps the faster; --retime
    times them again now (after an upgrade, or on a machine that was busy the first time).
    """
    report = doctor_report(rerank_model=rerank_model, retime=retime)
    typer.echo(json.dumps(report, indent=2) if as_json else render_report(report))
