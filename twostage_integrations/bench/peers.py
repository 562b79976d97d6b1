"""The strongest peers a careful user can configure today: sentence-transformers' own ``CrossEncoder`` on its
ONNX and OpenVINO backends, fp32 and int8, reranking the same candidates as the ``exact`` row.

Systems (:data:`PEERS`):

- ``st-onnx``: ``CrossEncoder(model, backend="onnx")`` (exported by Optimum, fp32).
- ``st-onnx-int8``: the same export through ``export_dynamic_quantized_onnx_model(model, CONFIG, folder)``,
  CONFIG the best of ``avx512_vnni``, ``avx512``, ``avx2``, ``arm64`` this CPU has, loaded with
  ``model_kwargs={"file_name": "onnx/model_qint8_CONFIG.onnx"}``.
- ``st-openvino``: ``CrossEncoder(model, backend="openvino")`` (fp32).
- ``st-openvino-int8``: ``export_static_quantized_openvino_model(model, None, folder, ...)`` calibrated on the
  benchmark's own passages (ST's default calibration set, GLUE SST-2, comes from the hub), loaded with
  ``model_kwargs={"file_name": "openvino/openvino_model_qint8_quantized.xml"}``.

Each export is made once from the local model folder and kept under ``$TWOSTAGE_CACHE_DIR/st-peers`` (else the
user cache dir). The backends need ``optimum[onnxruntime]`` / ``optimum-intel[openvino]`` (+ ``nncf`` and
``datasets`` for OpenVINO int8); without them, or when an export fails, the row says why instead of timing.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import platform
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .built import BuiltSystem, max_length_of

logger = logging.getLogger(__name__)

PEERS: dict[str, str] = {
    "st-onnx": "sentence-transformers CrossEncoder(model, backend='onnx'), fp32",
    "st-onnx-int8": "sentence-transformers CrossEncoder on ONNX, export_dynamic_quantized_onnx_model (int8)",
    "st-openvino": "sentence-transformers CrossEncoder(model, backend='openvino'), fp32",
    "st-openvino-int8": "sentence-transformers CrossEncoder on OpenVINO, export_static_quantized_openvino_model (int8)",
}
# peer -> (ST backend, int8?)
PEER_BACKENDS: dict[str, tuple[str, bool]] = {
    "st-onnx": ("onnx", False),
    "st-onnx-int8": ("onnx", True),
    "st-openvino": ("openvino", False),
    "st-openvino-int8": ("openvino", True),
}
# what each ST backend imports -> the pip requirement that provides it
REQUIREMENTS: dict[str, list[tuple[str, str]]] = {
    "onnx": [("optimum.onnxruntime", "optimum[onnxruntime]")],
    "openvino": [("optimum.intel.openvino", "optimum-intel[openvino]")],
    "openvino-int8": [
        ("optimum.intel.openvino", "optimum-intel[openvino]"),
        ("nncf", "nncf"),
        ("datasets", "datasets"),
    ],
}
ONNX_INT8_CONFIGS = ("avx512_vnni", "avx512", "avx2")  # ST's dynamic int8 configs for x86, fastest first
OPENVINO_INT8_FILE = "openvino/openvino_model_qint8_quantized.xml"  # ST's default file_suffix "qint8_quantized"
CALIBRATION_TEXTS = 300


def peer_unavailable(name: str) -> str | None:
    """Why peer ``name`` cannot run here, or None when its libraries import.

    Args:
        name: A key of :data:`PEERS`.

    Returns:
        ``"not installed: ..."`` naming the pip requirement, ``"not usable: ..."`` when it is installed but fails
        to import (e.g. a version built for another transformers), ``"no int8 config: ..."`` for a CPU ST has
        no dynamic int8 recipe for; None when it can run.
    """
    backend, int8 = PEER_BACKENDS[name]
    for module, requirement in REQUIREMENTS[f"{backend}-int8" if backend == "openvino" and int8 else backend]:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError:
            return f'not installed: {requirement} (pip install "{requirement}"; see docs/bench.md)'
        except Exception as exc:  # noqa: BLE001 - an installed but broken package: the row reports it
            return f"not usable: {requirement} fails to import ({type(exc).__name__}: {exc})"
    if backend == "onnx" and int8 and onnx_int8_config() is None:
        return (
            f"no int8 config: sentence-transformers has dynamic int8 recipes for {', '.join(ONNX_INT8_CONFIGS)}, arm64"
        )
    return None


def cpu_flags() -> set[str]:
    """This CPU's feature flags (``/proc/cpuinfo``; empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return set()
    return {f for line in text.splitlines() if line.startswith("flags") for f in line.split(":", 1)[1].split()}


def onnx_int8_config(flags: set[str] | None = None, machine: str | None = None) -> str | None:
    """The ``quantization_config`` name ST's ``export_dynamic_quantized_onnx_model`` should use on this CPU.

    Args:
        flags: CPU flags (default: :func:`cpu_flags`).
        machine: ``platform.machine()`` (default: this one's).

    Returns:
        ``avx512_vnni``, ``avx512``, ``avx2`` or ``arm64``; None when none applies.
    """
    flags = cpu_flags() if flags is None else flags
    machine = platform.machine() if machine is None else machine
    if machine.lower() in ("arm64", "aarch64"):
        return "arm64"
    by_flag = {"avx512_vnni": "avx512_vnni", "avx512f": "avx512", "avx2": "avx2"}
    return next((config for flag, config in by_flag.items() if flag in flags), None)


def _cache_root() -> Path:
    from ..rerank.onnx_export import cache_dir

    return cache_dir().parent / "st-peers"


def _export_folder(model_path: str, backend: str) -> Path:
    """Where the fp32 export of ``model_path`` for ``backend`` is kept: keyed by the folder, its files' sizes and
    times, and the sentence-transformers version."""
    from importlib.metadata import version

    source = Path(model_path).expanduser().resolve()
    stats = sorted((p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in source.iterdir() if p.is_file())
    key = json.dumps([str(source), stats, version("sentence-transformers"), backend]).encode()
    return _cache_root() / f"{source.name}-{backend}-{hashlib.sha256(key).hexdigest()[:12]}"


def _exported(model_path: str, backend: str) -> Path:
    """The fp32 export of ``model_path`` on ``backend``, made once (written to a temporary folder, then renamed)."""
    from sentence_transformers import CrossEncoder

    folder = _export_folder(model_path, backend)
    if not folder.is_dir():
        logger.warning("exporting %s for sentence-transformers' %s backend into %s (once)", model_path, backend, folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
        CrossEncoder(model_path, backend=backend).save_pretrained(str(tmp))
        try:
            tmp.rename(folder)
        except OSError:  # another process exported it meanwhile: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _onnx_int8(folder: Path) -> str:
    """``onnx/model_qint8_CONFIG.onnx`` inside ``folder``, quantized by ST once."""
    from sentence_transformers import CrossEncoder, export_dynamic_quantized_onnx_model

    config = onnx_int8_config()
    assert config is not None  # peer_unavailable checked it
    found = sorted((folder / "onnx").glob(f"model_*_{config}.onnx"))
    if not found:
        export_dynamic_quantized_onnx_model(CrossEncoder(str(folder), backend="onnx"), config, str(folder))
        found = sorted((folder / "onnx").glob(f"model_*_{config}.onnx"))
    return f"onnx/{found[0].name}"


def _openvino_int8(folder: Path, texts: Sequence[str]) -> str:
    """``openvino/openvino_model_qint8_quantized.xml`` inside ``folder``: ST's static quantization, calibrated on
    ``texts`` (a local JSON-lines dataset, since ST's default set is on the hub)."""
    from sentence_transformers import CrossEncoder, export_static_quantized_openvino_model

    if not (folder / OPENVINO_INT8_FILE).is_file():
        with tempfile.TemporaryDirectory(prefix="twostage-calibration-") as data:
            lines = [json.dumps({"text": t}) for t in texts[:CALIBRATION_TEXTS]]
            (Path(data) / "train.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
            model = CrossEncoder(str(folder), backend="openvino")
            export_static_quantized_openvino_model(
                model, None, str(folder), dataset_name=data, dataset_config_name="default", dataset_split="train",
                column_name="text",
            )  # fmt: skip
    return OPENVINO_INT8_FILE


def load_peer(name: str, model_path: str, *, max_length: int | None, texts: Sequence[str]) -> tuple[Any, str]:
    """Peer ``name``'s ``CrossEncoder`` and its engine label (read from the loaded model).

    Args:
        name: A key of :data:`PEERS`.
        model_path: The local cross-encoder folder.
        max_length: Token limit (None: the model's own, as for the native stacks).
        texts: Passages to calibrate OpenVINO int8 on.

    Returns:
        ``(model, engine label)``.
    """
    from sentence_transformers import CrossEncoder

    backend, int8 = PEER_BACKENDS[name]
    folder = _exported(model_path, backend)
    kwargs: dict[str, Any] = {} if max_length is None else {"max_length": max_length}
    file = None
    if int8:
        file = _onnx_int8(folder) if backend == "onnx" else _openvino_int8(folder, texts)
        kwargs["model_kwargs"] = {"file_name": file}
    model = CrossEncoder(str(folder), backend=backend, **kwargs)
    engine = {"onnx": "ONNX Runtime", "openvino": "OpenVINO"}.get(model.backend, model.backend)
    return model, f"ST {engine} " + (f"int8 ({Path(file).name})" if file else "fp32")


def _peer_search(recall: Any, model: Any, limit: int, top_k: int) -> Callable[[str], list[str]]:
    def search(query: str) -> list[str]:
        hits = recall.search(query, limit)
        scores = model.predict([(query, h.text) for h in hits], show_progress_bar=False)
        order = sorted(range(len(hits)), key=lambda i: -float(scores[i]))  # stable: ties keep recall order
        return [hits[i].id for i in order[:top_k]]

    return search


def peer_systems(
    names: Sequence[str],
    recall: Any,
    model_path: str,
    *,
    limit: int,
    top_k: int,
    max_length: int | None = None,
    texts: Sequence[str] = (),
) -> dict[str, BuiltSystem | str]:
    """The peers among ``names``, built; a peer that cannot run maps to the reason instead.

    Args:
        names: The systems to run; those not in :data:`PEERS` are ignored.
        recall: The dense recall of the ``exact`` row (same collection, same embedder).
        model_path: The local cross-encoder folder the ``exact`` row reranks with.
        limit: Candidates recalled per query.
        top_k: Results kept.
        max_length: Token limit (None: the model's own).
        texts: Passages to calibrate OpenVINO int8 on.

    Returns:
        By peer name: the built system, or why it is not there (``not installed: ...``, ``failed: ...``).
    """
    out: dict[str, BuiltSystem | str] = {}
    for name in (n for n in names if n in PEERS):
        reason = peer_unavailable(name)
        if reason is not None:
            out[name] = reason
            continue
        try:
            model, engine = load_peer(name, model_path, max_length=max_length, texts=texts)
        except Exception as exc:  # noqa: BLE001 - an export or load that fails is that row's result, logged
            logger.warning("%s could not be built: %s: %s", name, type(exc).__name__, exc)
            out[name] = f"failed: {type(exc).__name__}: {exc}"
            continue
        out[name] = BuiltSystem(
            _peer_search(recall, model, limit, top_k),
            None,
            max_length_of(model),
            description=PEERS[name],
            engine=engine,
        )
    return out
