"""``backend="auto"``, the default: the fastest exact cross-encoder engine on this machine, timed once and cached.

What it chooses among: the *exact* engines, whose scores equal sentence-transformers' within float rounding:
torch and ONNX Runtime fp32 (OpenVINO would join them here once it has an engine; it has none yet). ``onnx-int8``
is never picked by ``auto``: int8 weights rank close to fp32 but not identically, a different quality level, so
trading it for speed is a choice a spec, a preset or ``backend="onnx-int8"`` makes explicitly.

How it chooses (:func:`pick_engine`): the candidate engines are loaded with the stage's settings, then score the
same :data:`TIMING_PAIRS` real (query, passage) pairs from the bundled sample corpus, in :data:`ROUNDS` interleaved
rounds; each engine's median pairs/s decides (:func:`decide`). In a process that has not imported
torch, an engine without torch that is within :data:`MARGIN` of torch wins: staying torch-free saves seconds of
import and hundreds of MiB.

The cache: the measured pairs/s go into ``engine-picks.json`` in the ONNX cache folder, keyed by the CPU model and
cores, the model's content hash (the ONNX cache's own, memoised), the token limit, the batch sizes and the engines'
versions (onnxruntime, torch, transformers); later processes read the pick instead of timing, and any change of a
key part times again. Lookups and timings hold a file lock, so processes starting together time once (and never
time while another process times on the same cores). Nothing here imports torch: only loading the torch engine
(a caller's loader) does.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from importlib.resources import files
from pathlib import Path
from typing import Any, TypeVar

from ..errors import TwoStageError
from .onnx import TORCH_FREE
from .onnx_export import cache_dir

try:  # POSIX; elsewhere lookups are serialised within a process only
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

PICKS_FILE = "engine-picks.json"
PICKS_VERSION = 1
# A few hundred real pairs, each scored once per engine in ROUNDS interleaved slices: seconds per engine on an idle
# 2-core machine (the pick is made once per machine and model), enough batches per slice for a stable median.
TIMING_PAIRS = 256
ROUNDS = 4
MARGIN = 0.05  # a torch-free engine within 5% of torch wins in a process that has not imported torch
VERSIONED = ("onnxruntime", "torch", "transformers")  # an upgrade of any of these may change the winner
SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")
_MAX_ENTRIES = 64  # picks kept, newest last: one per (model, settings, machine)

_lock = threading.Lock()
_retime: contextvars.ContextVar[bool] = contextvars.ContextVar("twostage_retime", default=False)
E = TypeVar("E")


@dataclass(frozen=True)
class EnginePick:
    """Which engine ``auto`` chose and why.

    Attributes:
        backend: The engine: ``"onnx"`` or ``"torch"``.
        source: ``"timed"`` (measured now), ``"cache"`` (measured by an earlier process) or ``"only"`` (the one
            engine installed, or the one a GPU device allows: nothing to time).
        pairs_per_s: Median pairs/s of each engine timed (empty for ``"only"``).
        key: What the measurement holds for (CPU, model hash, limit, batch sizes, versions).
    """

    backend: str
    source: str
    pairs_per_s: dict[str, float] = field(default_factory=dict)
    key: dict[str, Any] = field(default_factory=dict)


# -- the machine ----------------------------------------------------------------------------------------------
def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break  # one processor is enough: they are the same model
            continue
        name, _, value = line.partition(":")
        fields.setdefault(name.strip(), value.strip())
    return fields


def cpu_model() -> str:
    """The CPU's model name (``model name`` in /proc/cpuinfo), else what :mod:`platform` knows."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine() or "unknown CPU"


def cpu_flags() -> list[str]:
    """The CPU features among :data:`SPEED_FLAGS` this machine has (empty where /proc/cpuinfo is missing)."""
    flags = set(_cpuinfo().get("flags", "").split())
    return [f for f in SPEED_FLAGS if f in flags]


def engine_versions() -> dict[str, str | None]:
    """The installed versions of :data:`VERSIONED` (None: not installed), read without importing them."""
    found: dict[str, str | None] = {}
    for name in VERSIONED:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def model_hash(folder: Path) -> str:
    """The model's content hash as the ONNX cache computes it (shipped graph, else config and weights), read from
    its memo when the files did not change, so a known model is not hashed again."""
    from . import onnx_export as export

    shipped = folder / "onnx" / "model.onnx"
    if shipped.is_file():
        return export._hash_files([shipped], {"shipped": True})
    weights = [folder / f for f in export.WEIGHT_FILES if (folder / f).is_file()]
    # The same files and settings as the fp32 export's key: one memo entry serves both.
    settings = {"opset": export.OPSET, "export": export.EXPORT_VERSION}
    return export._hash_files([folder / "config.json", *weights], settings)


def pick_key(
    *,
    model_hash: str,
    max_length: int,
    batch_sizes: Mapping[str, int],
    threads: int,
    cpu: str | None = None,
    versions: Mapping[str, str | None] | None = None,
) -> dict[str, Any]:
    """What a measurement holds for; a pick is reused only when all of it is the same.

    Args:
        model_hash: :func:`model_hash` of the model folder.
        max_length: The stage's token limit.
        batch_sizes: Pairs per forward pass of each candidate engine (their names are the candidates).
        threads: Cores the engines use.
        cpu: The CPU model (default: :func:`cpu_model`).
        versions: Engine versions (default: :func:`engine_versions`).

    Returns:
        A JSON-ready dict.
    """
    return {
        "cpu": cpu if cpu is not None else cpu_model(),
        "threads": threads,
        "model": model_hash,
        "max_length": max_length,
        "batch_size": dict(sorted(batch_sizes.items())),
        "versions": dict(versions if versions is not None else engine_versions()),
    }


def _digest(key: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


# -- timing ---------------------------------------------------------------------------------------------------
def timing_pairs(n: int = TIMING_PAIRS) -> list[tuple[str, str]]:
    """``n`` real (query, passage) pairs from the bundled sample corpus (Python documentation passages of varied
    length): each passage with its own first line as the query, or with another passage's.

    Args:
        n: How many pairs.

    Returns:
        The pairs.
    """
    rows = [json.loads(line) for line in (files("twostage_integrations") / "data" / "sample_corpus.jsonl").open()]
    texts = [str(r["text"]) for r in rows]
    queries = [t.split("\n", 1)[0][:120] for t in texts]
    return [(queries[i % len(queries)] if i % 2 else queries[(i * 7 + 3) % len(queries)], texts[i % len(texts)])
            for i in range(n)]  # fmt: skip


def time_engines(
    engines: Mapping[str, Any],
    pairs: Sequence[tuple[str, str]],
    *,
    rounds: int = ROUNDS,
    timer: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
    """Median pairs/s of each engine: one warm-up batch each, then ``rounds`` rounds; round ``r`` gives every engine
    the same slice ``pairs[r::rounds]`` (a mix of lengths like the whole), interleaved with the order alternating,
    so a burst of load on a busy machine hits every engine. Each engine scores every pair once.

    Args:
        engines: Engines (``predict(pairs)``) by name.
        pairs: (query, passage) pairs, at least ``rounds`` of them.
        rounds: Timed runs per engine.
        timer: Seconds clock.

    Returns:
        Median pairs/s by engine name.
    """
    for engine in engines.values():  # first-run allocations and lazy set-up stay out of the timings
        engine.predict(pairs[: max(1, int(getattr(engine, "batch_size", 16)))])
    samples: dict[str, list[float]] = {name: [] for name in engines}
    names = list(engines)
    for r in range(rounds):
        part = pairs[r::rounds]
        for name in names if r % 2 == 0 else names[::-1]:
            start = timer()
            engines[name].predict(part)
            samples[name].append(len(part) / max(timer() - start, 1e-9))
    return {name: float(statistics.median(values)) for name, values in samples.items()}


def decide(pairs_per_s: Mapping[str, float], *, torch_loaded: bool, margin: float = MARGIN) -> str:
    """The engine to run: the fastest, except that without torch imported a torch-free engine within ``margin``
    of torch wins (importing torch costs seconds and hundreds of MiB that a few percent of speed do not repay).

    Args:
        pairs_per_s: Measured pairs/s by engine.
        torch_loaded: Whether this process has imported torch already.
        margin: The fraction of torch's speed a torch-free engine may lose and still win.

    Returns:
        An engine name of ``pairs_per_s``.

    >>> speeds = {"torch": 100.0, "onnx": 96.0}
    >>> decide(speeds, torch_loaded=False), decide(speeds, torch_loaded=True)
    ('onnx', 'torch')
    """
    best = max(pairs_per_s, key=lambda name: pairs_per_s[name])
    free = [name for name in pairs_per_s if name in TORCH_FREE]
    if best == "torch" and not torch_loaded and free:
        alternative = max(free, key=lambda name: pairs_per_s[name])
        if pairs_per_s[alternative] >= (1.0 - margin) * pairs_per_s["torch"]:
            return alternative
    return best


# -- the cache ------------------------------------------------------------------------------------------------
def picks_file() -> Path:
    """Where the picks are kept: ``engine-picks.json`` beside the ONNX exports (``$TWOSTAGE_CACHE_DIR/onnx``)."""
    return cache_dir() / PICKS_FILE


def read_picks(path: Path | None = None) -> dict[str, dict[str, Any]]:
    """The cached picks by key digest; an unreadable or malformed file counts as empty, with one WARNING.

    Args:
        path: The picks file (default: :func:`picks_file`).

    Returns:
        Entries with ``key``, ``pairs_per_s``, ``model`` and ``timed_at``.
    """
    path = path or picks_file()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        logger.warning("twostage: ignoring the engine pick cache %s (%s); engines are timed again", path, exc)
        return {}
    picks = data.get("picks") if isinstance(data, dict) and data.get("version") == PICKS_VERSION else None
    if not isinstance(picks, dict):
        logger.warning("twostage: ignoring the engine pick cache %s (not this version's format); timing again", path)
        return {}
    return {k: v for k, v in picks.items() if _valid(v)}


def _valid(entry: Any) -> bool:
    if not isinstance(entry, dict) or not isinstance(entry.get("key"), dict):
        return False
    speeds = entry.get("pairs_per_s")
    return (
        isinstance(speeds, dict)
        and sorted(speeds) == sorted(entry["key"].get("batch_size") or {})
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in speeds.values())
    )


def _write_picks(path: Path, picks: dict[str, dict[str, Any]]) -> None:
    """Replace the picks file atomically (a reader sees the old file or the new one); a cache that cannot be
    written only costs a timing in the next process (one WARNING)."""
    kept = dict(list(picks.items())[-_MAX_ENTRIES:])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=PICKS_FILE, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"version": PICKS_VERSION, "picks": kept}, f, indent=1)
        os.replace(tmp, path)
    except OSError as exc:
        logger.warning("twostage: could not save the engine pick to %s (%s); the next process times again", path, exc)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """This module's thread lock and, where possible, an exclusive file lock on ``<picks file>.lock``."""
    with _lock:
        fd = None
        if fcntl is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
                fcntl.flock(fd, fcntl.LOCK_EX)  # released when fd closes, also when the process dies
            except OSError as exc:  # a read-only cache: no cross-process lock, the pick is not saved either
                logger.debug("no lock on %s: %s", path, exc)
        try:
            yield
        finally:
            if fd is not None:
                os.close(fd)


@contextlib.contextmanager
def retiming() -> Iterator[None]:
    """Within this block, ``auto`` times the engines again instead of reading a cached pick (``twostage doctor
    --retime``); the new measurement replaces the cached one."""
    token = _retime.set(True)
    try:
        yield
    finally:
        _retime.reset(token)


def _speeds(pairs_per_s: Mapping[str, float]) -> str:
    return ", ".join(f"{name} {pairs_per_s[name]:.1f} pairs/s" for name in sorted(pairs_per_s))


# -- the pick -------------------------------------------------------------------------------------------------
def pick_engine(
    loaders: Mapping[str, Callable[[], E]],
    *,
    key: Mapping[str, Any],
    label: str,
    cache_file: Path | None = None,
    pairs: Sequence[tuple[str, str]] | None = None,
    rounds: int = ROUNDS,
    timer: Callable[[], float] = time.perf_counter,
    torch_loaded: bool | None = None,
) -> tuple[EnginePick, E]:
    """Choose and load the engine for one stage: the cached pick for ``key``, else time every candidate now.

    Logs one INFO line naming the pick and the measured pairs/s.

    Args:
        loaders: Candidate engines by name (``"onnx"``, ``"torch"``): each call loads one with the stage's settings.
        key: What the measurement holds for (:func:`pick_key`).
        label: The model, for the log line and the cache entry.
        cache_file: The picks file (default: :func:`picks_file`).
        pairs: Timing pairs (default: :func:`timing_pairs`).
        rounds: Timed runs per engine.
        timer: Seconds clock.
        torch_loaded: Whether torch counts as imported (default: whether it is, now).

    Returns:
        ``(pick, engine)``: the loaded engine is the picked one (the others are dropped).

    Raises:
        TwoStageError: Every candidate failed to load (the first failure).
    """
    torch_loaded = "torch" in sys.modules if torch_loaded is None else torch_loaded
    if len(loaders) == 1:
        ((name, load),) = loaders.items()
        return EnginePick(name, "only"), load()
    path = cache_file or picks_file()
    digest = _digest(key)
    with _locked(path):
        picks = read_picks(path)
        entry = None if _retime.get() else picks.get(digest)
        if entry is not None and sorted(entry["pairs_per_s"]) == sorted(loaders):
            speeds = {k: float(v) for k, v in entry["pairs_per_s"].items()}
            backend = decide(speeds, torch_loaded=torch_loaded)
            logger.info("twostage: rerank engine %s for %s (cached pick on this machine: %s)", backend, label,
                        _speeds(speeds))  # fmt: skip
            return EnginePick(backend, "cache", speeds, dict(key)), loaders[backend]()
        engines = _load_all(loaders, label)
        if len(engines) == 1:  # the others failed to load: nothing to compare, nothing worth caching
            ((name, engine),) = engines.items()
            return EnginePick(name, "only"), engine
        speeds = time_engines(engines, pairs if pairs is not None else timing_pairs(), rounds=rounds, timer=timer)
        backend = decide(speeds, torch_loaded=torch_loaded)
        picks.pop(digest, None)  # re-inserted last: the newest entries are the ones kept
        picks[digest] = {
            "model": label,
            "key": dict(key),
            "pairs_per_s": {k: round(v, 2) for k, v in speeds.items()},
            "timed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "pairs": len(pairs) if pairs is not None else TIMING_PAIRS,
            "rounds": rounds,
        }
        _write_picks(path, picks)
    logger.info("twostage: rerank engine %s for %s (timed on this machine: %s)", backend, label, _speeds(speeds))
    return EnginePick(backend, "timed", speeds, dict(key)), engines[backend]


def _load_all(loaders: Mapping[str, Callable[[], E]], label: str) -> dict[str, E]:
    """Every candidate that loads; one that cannot (a model the ONNX engine does not run) is left out, with one
    WARNING line. Raises the first failure when none loads."""
    engines: dict[str, E] = {}
    failures: list[TwoStageError] = []
    for name, load in loaders.items():
        try:
            engines[name] = load()
        except TwoStageError as exc:
            logger.warning("twostage: rerank engine %s cannot run %s (%s); auto leaves it out", name, label, exc)
            failures.append(exc)
    if not engines:
        raise failures[0]
    return engines


# -- what `twostage doctor` shows -----------------------------------------------------------------------------
PACKAGES = ("onnxruntime", "onnx", "tokenizers", "torch", "transformers", "sentence-transformers", "openvino")


def machine_info() -> dict[str, Any]:
    """This machine as the engines see it: CPU model, cores (logical, usable by this process, physical) and the
    speed-relevant CPU flags (AVX-512 VNNI and AMX make int8 and bf16 matrix products much faster).

    Returns:
        A JSON-ready dict.
    """
    from .onnx import physical_cores

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "physical_cores": physical_cores(),
        "flags": cpu_flags(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def package_versions() -> dict[str, str | None]:
    """Installed versions of the engine packages of :data:`PACKAGES` (None: not installed), without importing
    them."""
    found: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def describe_picks(path: Path | None = None) -> list[dict[str, Any]]:
    """The cached picks, oldest first, each with what ``auto`` runs from it in a process without torch
    (``pick``) and in one that imported torch already (``pick_torch_loaded``), and whether it still holds here
    (``current``: same CPU, cores and engine versions; otherwise the next use times again).

    Args:
        path: The picks file (default: :func:`picks_file`).

    Returns:
        JSON-ready dicts.
    """
    from .onnx import physical_cores

    here = {"cpu": cpu_model(), "threads": physical_cores(), "versions": engine_versions()}
    described = []
    for entry in read_picks(path).values():
        key, speeds = entry["key"], {k: float(v) for k, v in entry["pairs_per_s"].items()}
        described.append(
            {
                "model": entry.get("model"),
                "max_length": key.get("max_length"),
                "batch_size": key.get("batch_size"),
                "pairs_per_s": speeds,
                "pick": decide(speeds, torch_loaded=False),
                "pick_torch_loaded": decide(speeds, torch_loaded=True),
                "timed_at": entry.get("timed_at"),
                "current": all(key.get(k) == v for k, v in here.items()),
                "key": key,
            }
        )
    return described
