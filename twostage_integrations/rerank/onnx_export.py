"""Exporting a cross-encoder to ONNX, quantising it to int8, and the cache both write to.

Runs once per model: :func:`onnx_model_path` returns the cached ``.onnx`` file, making it first if missing.
Only :func:`export_onnx` imports torch (and transformers, onnx); the ONNX Runtime engine itself lives in
:mod:`twostage_integrations.rerank.onnx`.

Where the files go: ``$TWOSTAGE_CACHE_DIR/onnx``, else the user cache dir (``~/.cache/twostage/onnx`` on
Linux), one file per (model content, settings) key, written to a temporary name and renamed, so a
concurrent process never reads half a file. A model folder that ships ``onnx/model.onnx`` (hub cross-encoders
do) is used as is.

The cache is checked, not trusted (docs/reliability.md, "The ONNX cache"): each file's size and sha256 go into
its ``.json`` manifest at write time and are compared before use; a file that fails (or that ONNX Runtime
cannot load) is exported again once. Exports hold a ``<file>.lock`` file lock, so several processes starting
together export once. A cache dir that cannot be written falls back to a per-user temporary folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from ..config import TWOSTAGE_CACHE_DIR, XDG_CACHE_HOME
from ..errors import MissingDependencyError, ModelLoadError
from ..extras import install_line

try:  # POSIX; elsewhere exports are serialised within a process only (unique temp names keep readers safe)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

CACHE_ENV = TWOSTAGE_CACHE_DIR.name
INSTALL_HINT = install_line("onnx")
OPSET = 17
# Bump when the export or quantisation recipe changes: the cache key includes it, so old files are not reused.
EXPORT_VERSION = 1
# int8 recipe, picked on SciFact train pairs (docs/bench.md): per-channel weight scales keep ranking far
# better than per-tensor ones; the 1-logit classifier is tiny and stays fp32 (its rounding moves every score).
INT8_RECIPE: dict[str, Any] = {"per_channel": True, "op_types": ["MatMul"], "exclude": ["classifier"]}
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# Files a hub snapshot needs for this engine (no torch weights when the repo ships onnx/model.onnx).
_HUB_FILES = [
    "config.json",
    "config_sentence_transformers.json",
    "sentence_bert_config.json",
    "modules.json",
    "tokenizer*",
    "special_tokens_map.json",
    "vocab.txt",
]

# Cache keys of files already hashed, by path, size and mtime (see _hash_files).
HASH_MEMO = "hashes.json"
_MEMO_SIZE = 256

# Every export this process made (a test reads it to prove the second load reused the cache).
EXPORTS: list[Path] = []
_export_lock = threading.Lock()
# Files whose hash matched their manifest in this process, by (path, size, mtime, inode): hashed once each.
_VERIFIED: set[tuple[str, int, int, int]] = set()
# Files ONNX Runtime refused in this process (same key), with why: checked like a failed hash.
_REJECTED: dict[tuple[str, int, int, int], str] = {}
_FALLBACK_WARNED: set[str] = set()


# -- files and cache ------------------------------------------------------------------------------------------
def cache_dir() -> Path:
    """``$TWOSTAGE_CACHE_DIR/onnx``, else the platform's user cache dir (``~/.cache/twostage/onnx``)."""
    root = TWOSTAGE_CACHE_DIR.value()
    if root:
        return Path(root).expanduser() / "onnx"
    try:
        from platformdirs import user_cache_dir

        return Path(user_cache_dir("twostage")) / "onnx"
    except ImportError:  # platformdirs is usually present (pip, chromadb pull it); XDG otherwise
        return Path(XDG_CACHE_HOME.value() or Path.home() / ".cache") / "twostage" / "onnx"


def snapshot(name: str, local_only: bool, *, extra: Sequence[str] = ()) -> Path:
    """The model folder: ``name`` itself if it is a folder, else a hub snapshot (config, tokenizer, and
    ``onnx/model.onnx`` or the torch weights). Raises OSError/ValueError like transformers would, so
    :func:`~twostage_integrations.models.load_model` turns them into one clear error."""
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(f"{path} has no config.json, so it is not a transformers model folder")
        return path
    from huggingface_hub import snapshot_download

    # Configs, tokenizer and the shipped ONNX graph if there is one; the torch weights only when there is not.
    folder = Path(
        snapshot_download(name, local_files_only=local_only, allow_patterns=[*_HUB_FILES, *extra, "onnx/model.onnx"])
    )
    if not (folder / "onnx" / "model.onnx").is_file():
        folder = Path(
            snapshot_download(name, local_files_only=local_only, allow_patterns=[*_HUB_FILES, *extra, *WEIGHT_FILES])
        )
    return folder


def _hash_files(paths: Sequence[Path], extra: dict[str, Any]) -> str:
    """The cache key of ``paths`` (their names and bytes) and ``extra``.

    Hashing a model's weights takes a good part of a second, on every start; the key is memoised in the cache dir
    by each file's path, size and modification time, so a process that finds its export cached reads no weights.
    """
    stamps = [[str(p.resolve()), (st := p.stat()).st_size, st.st_mtime_ns] for p in paths]
    memo_key = hashlib.sha256(json.dumps([stamps, extra], sort_keys=True).encode()).hexdigest()
    memo_file = cache_dir() / HASH_MEMO
    memo = _read_memo(memo_file)
    if isinstance(memo.get(memo_key), str):
        return str(memo[memo_key])
    digest = hashlib.sha256(json.dumps(extra, sort_keys=True).encode())
    for p in paths:
        digest.update(p.name.encode() + b"\0")
        with open(p, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    key = digest.hexdigest()[:20]
    memo = dict(list(memo.items())[-(_MEMO_SIZE - 1) :])  # the newest entries; one per model and settings
    memo[memo_key] = key
    try:
        memo_file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=memo_file.parent, prefix=HASH_MEMO, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(memo, f)
        os.replace(tmp, memo_file)  # atomic: a concurrent reader sees the old memo or the new one
    except OSError as exc:  # a read-only cache still works, it just hashes again next time
        logger.debug("could not save the hash memo %s: %s", memo_file, exc)
    return key


def _read_memo(path: Path) -> dict[str, Any]:
    try:
        memo = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return memo if isinstance(memo, dict) else {}


def _pkg(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def onnx_model_path(model_dir: Path, *, int8: bool) -> Path:
    """The fp32 (``int8=False``) or int8 ``.onnx`` for ``model_dir``: the folder's own ``onnx/model.onnx`` if it
    ships one, else a cached export (made now if missing or failing its size/sha256 check); int8 is always a cached
    quantisation of the fp32 file.

    Args:
        model_dir: A cross-encoder folder (see :func:`snapshot`).
        int8: Return the int8-quantised graph.

    Returns:
        The ``.onnx`` path: shipped, cached, or in the temporary fallback folder when the cache is read-only.

    Raises:
        ModelLoadError: The folder has neither ``onnx/model.onnx`` nor torch weights.
    """
    fp32, fp32_key = _fp32_graph(model_dir, {}, export_onnx, "cross-encoder")
    if not int8:
        return fp32
    # Quantisation output depends on onnxruntime's quantiser, so its version is part of this key.
    settings = {
        "from": fp32_key,
        "recipe": INT8_RECIPE,
        "onnxruntime": _pkg("onnxruntime"),
        "v": EXPORT_VERSION,
    }
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:20]
    return _build(
        cache_dir() / f"{key}-int8.onnx",
        lambda tmp: quantize_int8(fp32, tmp),
        f"quantising {fp32.name} to int8",
        settings,
    )


def _fp32_graph(
    model_dir: Path, task: dict[str, Any], export: Callable[[Path, Path], Path], kind: str
) -> tuple[Path, str]:
    """The folder's shipped ``onnx/model.onnx``, else a cached ``export(model_dir, tmp)`` (made now if missing or
    failing its size/sha256 check).

    ``task`` joins the cache key ({} for cross-encoders, so their keys stay as they were).
    """
    shipped = model_dir / "onnx" / "model.onnx"
    if shipped.is_file():
        return shipped, _hash_files([shipped], {"shipped": True})
    weights = [model_dir / f for f in WEIGHT_FILES if (model_dir / f).is_file()]
    if not weights:
        raise ModelLoadError(
            f"{model_dir} has neither onnx/model.onnx nor torch weights ({', '.join(WEIGHT_FILES)}); "
            f"point the model argument at a full {kind} folder"
        )
    # The exporter's torch/transformers versions are recorded in the manifest, not the key: the graph means
    # the same across versions (tests check scores against torch), and a torch-free install can then use an
    # export made earlier. EXPORT_VERSION is bumped when our export recipe changes.
    settings: dict[str, Any] = {"opset": OPSET, "export": EXPORT_VERSION, **task}
    key = _hash_files([model_dir / "config.json", *weights], settings)
    fp32 = _build(
        cache_dir() / f"{key}.onnx", lambda tmp: export(model_dir, tmp), f"exporting {model_dir} to ONNX", settings
    )
    return fp32, key


def embedding_onnx_path(model_dir: str | os.PathLike[str]) -> Path:
    """The fp32 ``.onnx`` of a transformer encoder (its ``last_hidden_state``), for the ONNX embedder: the folder's
    own ``onnx/model.onnx`` if it ships one, else a cached :func:`export_encoder_onnx` (made now if missing).

    Args:
        model_dir: The folder of the embedding model's transformer (``config.json`` and weights).

    Returns:
        The path of the graph.

    Raises:
        ModelLoadError: The folder has neither an ONNX graph nor torch weights.
        MissingDependencyError: An export is needed and torch, transformers or onnx is missing.
    """
    return _fp32_graph(Path(model_dir), {"task": "last_hidden_state"}, export_encoder_onnx, "embedding model")[0]


def _build(target: Path, make: Callable[[Path], Path], what: str, settings: dict[str, Any]) -> Path:
    """The checked cache file ``target``: returned as is when its size and sha256 match its manifest, else made
    by ``make(tmp_path)`` under a file lock and renamed into place (atomic on one filesystem).

    A file that fails its check is made again with one WARNING line saying why. When ``target``'s folder cannot
    be written, the file is looked up and made in a per-user temporary folder instead (one WARNING).

    Returns:
        The usable file: ``target``, or the same name in the fallback folder.
    """
    problem = _check(target)
    if problem is None:
        return target
    unwritable = _unwritable(target.parent)
    if unwritable:
        target = _fallback_dir(target.parent, unwritable) / target.name
        problem = _check(target)
        if problem is None:
            return target
    with _locked(target):  # threads and processes: the first exports, the others then find its file
        problem = _check(target)
        if problem is None:
            return target
        # WARNING, not INFO: an export takes a while and the CLI shows only warnings (through logging's
        # last-resort handler) unless --verbose; this keeps the one line users saw when this was a print.
        if problem == _MISSING:
            logger.warning("twostage: %s (once; cached at %s)", what, target)
        else:
            logger.warning("twostage: %s again: the cached %s %s", what, target, problem)
        _write(target, make, settings)
    return target


_MISSING = "is missing"


def _key(path: Path, st: os.stat_result) -> tuple[str, int, int, int]:
    return (str(path), st.st_size, st.st_mtime_ns, st.st_ino)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _check(target: Path) -> str | None:
    """None when ``target`` matches the size and sha256 its manifest records, else what is wrong (a phrase)."""
    try:
        st = target.stat()
    except (FileNotFoundError, NotADirectoryError):  # the latter: the cache dir is under a regular file
        return _MISSING
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    key = _key(target, st)
    if key in _REJECTED:
        return _REJECTED[key]
    if key in _VERIFIED:
        return None
    try:
        manifest = json.loads(target.with_suffix(".json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "has no manifest (an older version's cache, or an interrupted export)"
    except (OSError, ValueError) as exc:
        return f"has an unreadable manifest ({exc})"
    size, sha = (manifest.get("size"), manifest.get("sha256")) if isinstance(manifest, dict) else (None, None)
    if not isinstance(size, int) or not isinstance(sha, str):
        return "has a manifest without size and sha256 (an older version's cache)"
    if st.st_size != size:
        return f"is {st.st_size} bytes, its manifest records {size} (truncated or replaced)"
    try:
        actual = _sha256(target)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if actual != sha:
        return "does not match the sha256 its manifest records (corrupted or replaced)"
    _VERIFIED.add(key)
    return None


def reject_cached(path: Path, reason: str) -> bool:
    """Mark a cached file that passed its check but failed to load, so the next lookup exports it again.

    Args:
        path: The file :func:`onnx_model_path` returned.
        reason: Why it failed to load (goes into the re-export line).

    Returns:
        False when ``path`` is not a checked cache file (a model's shipped ``onnx/model.onnx``) or was already
        rejected in this process: exporting again would not help.
    """
    try:
        key = _key(path, path.stat())
    except OSError:
        return False
    if key not in _VERIFIED:
        return False
    _VERIFIED.discard(key)
    _REJECTED[key] = f"could not be loaded by ONNX Runtime ({reason})"
    return True


def _unwritable(folder: Path) -> str | None:
    """None when files can be created in ``folder`` (made if missing), else why not. Tried, not os.access:
    root passes access checks on read-only mounts, and a path under a regular file fails only when used."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        return f"{type(exc).__name__}: {exc.strerror or exc}"
    return None


def _fallback_dir(folder: Path, why: str) -> Path:
    """``<tmp>/twostage-onnx-<uid>``, private to this user (a folder someone else made there is not used)."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    fallback = Path(tempfile.gettempdir()) / f"twostage-onnx-{uid}"
    fallback.mkdir(mode=0o700, exist_ok=True)
    if hasattr(os, "getuid") and fallback.stat().st_uid != uid:
        fallback = Path(tempfile.mkdtemp(prefix="twostage-onnx-"))
    if str(folder) not in _FALLBACK_WARNED:
        _FALLBACK_WARNED.add(str(folder))
        logger.warning("twostage: cannot write the ONNX cache %s (%s); using %s instead", folder, why, fallback)
    return fallback


@contextlib.contextmanager
def _locked(target: Path) -> Iterator[None]:
    """Hold the thread lock and, where fcntl exists, an exclusive lock on ``<target>.lock`` (left in place:
    deleting a lock file races with a process about to lock it)."""
    with _export_lock:
        if fcntl is None:  # pragma: no cover - Windows
            yield
            return
        fd = os.open(target.with_name(target.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # released when fd closes, also when the process dies
            yield
        finally:
            os.close(fd)


def _write(target: Path, make: Callable[[Path], Path], settings: dict[str, Any]) -> None:
    """Make the file under a unique temp name, rename it over ``target``, then write its manifest (size and
    sha256) the same way: a crash in between leaves a file whose check fails, never a half file that passes."""
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=target.stem + ".", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        t0 = time.perf_counter()
        make(tmp)
        manifest = {**settings, "seconds": round(time.perf_counter() - t0, 1)}
        for pkg in ("torch", "transformers", "onnx", "onnxruntime"):
            manifest[pkg] = _pkg(pkg)
        manifest.update(size=tmp.stat().st_size, sha256=_sha256(tmp))
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache is as readable as any downloaded model
        os.replace(tmp, target)
        tmp.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        os.replace(tmp, target.with_suffix(".json"))
        _VERIFIED.add(_key(target, target.stat()))
        EXPORTS.append(target)
    finally:
        tmp.unlink(missing_ok=True)


def export_onnx(model_dir: str | os.PathLike[str], out: str | os.PathLike[str], *, opset: int = OPSET) -> Path:
    """Export a sequence-classification cross-encoder to ONNX (fp32, dynamic batch and sequence axes).

    Needs torch, transformers and onnx (the ``onnx`` extra); the only function here that imports torch.
    """
    try:
        import onnx  # noqa: F401 - torch's exporter needs it; fail here with the install line instead
        import torch
        from transformers import AutoConfig, AutoModelForSequenceClassification
    except ImportError as exc:
        raise MissingDependencyError(
            f"exporting a cross-encoder to ONNX needs torch, transformers and onnx ({exc.name} is missing): "
            f"{INSTALL_HINT}, or use a model folder that ships onnx/model.onnx"
        ) from exc
    model_dir = Path(model_dir)
    _check_single_module(model_dir)
    config = AutoConfig.from_pretrained(model_dir)
    # Eager attention exports to plain MatMul/Softmax, which ONNX Runtime's optimiser fuses well.
    from ..models import hidden_progress_bars

    with hidden_progress_bars():  # transformers' "Loading weights" bar; see models.load_model
        model = AutoModelForSequenceClassification.from_pretrained(model_dir, attn_implementation="eager").eval()
    names = ["input_ids", "attention_mask"]
    if getattr(config, "type_vocab_size", 0) > 1:  # BERT-style segment ids; RoBERTa-style models have one type
        names.append("token_type_ids")

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, *inputs):
            return self.inner(**dict(zip(names, inputs, strict=True))).logits

    dummy = tuple(torch.ones(2, 8, dtype=torch.long) if n != "token_type_ids" else torch.zeros(2, 8, dtype=torch.long)
                  for n in names)  # fmt: skip
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["logits"] = {0: "batch"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer and deprecation chatter about the legacy exporter
        torch.onnx.export(
            Logits().eval(),
            dummy,
            str(out),
            input_names=names,
            output_names=["logits"],
            dynamic_axes=axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,  # the TorchScript exporter: no onnxscript dependency, proven on BERT-style encoders
        )
    return Path(out)


def export_encoder_onnx(model_dir: str | os.PathLike[str], out: str | os.PathLike[str], *, opset: int = OPSET) -> Path:
    """Export a transformer encoder (``AutoModel``) to ONNX with one output, ``last_hidden_state`` (fp32, dynamic
    batch and sequence axes): what the ONNX embedder pools.

    Args:
        model_dir: The transformer's folder.
        out: Where to write the graph.
        opset: ONNX opset.

    Returns:
        ``out`` as a path.

    Raises:
        MissingDependencyError: torch, transformers or onnx is missing.
    """
    try:
        import onnx  # noqa: F401 - torch's exporter needs it; fail here with the install line instead
        import torch
        from transformers import AutoConfig, AutoModel
    except ImportError as exc:
        raise MissingDependencyError(
            f"exporting an embedding model to ONNX needs torch, transformers and onnx ({exc.name} is missing): "
            f"{INSTALL_HINT}, or use backend='torch'"
        ) from exc
    from ..models import hidden_progress_bars

    config = AutoConfig.from_pretrained(model_dir)
    with hidden_progress_bars():
        model = AutoModel.from_pretrained(model_dir, attn_implementation="eager").eval()
    names = ["input_ids", "attention_mask"]
    if getattr(config, "type_vocab_size", 0) > 1:
        names.append("token_type_ids")

    class Hidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, *inputs):
            return self.inner(**dict(zip(names, inputs, strict=True))).last_hidden_state

    dummy = tuple(torch.ones(2, 8, dtype=torch.long) if n != "token_type_ids" else torch.zeros(2, 8, dtype=torch.long)
                  for n in names)  # fmt: skip
    axes = {n: {0: "batch", 1: "sequence"} for n in [*names, "last_hidden_state"]}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Hidden().eval(),
            dummy,
            str(out),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    return Path(out)


def _check_single_module(model_dir: Path) -> None:
    modules = model_dir / "modules.json"
    if modules.is_file():
        entries = json.loads(modules.read_text(encoding="utf-8"))
        if len(entries) > 1:
            raise ModelLoadError(
                f"{model_dir} is a cross-encoder with {len(entries)} sentence-transformers modules; the ONNX "
                f"engine exports single-transformer models only: use backend='torch'"
            )


def quantize_int8(src: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Dynamic int8 quantisation of an fp32 cross-encoder graph with :data:`INT8_RECIPE`."""
    try:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise MissingDependencyError(f"int8 quantisation needs onnx and onnxruntime: {INSTALL_HINT}") from exc
    graph = onnx.load(str(src), load_external_data=False)
    exclude = [n.name for n in graph.graph.node if any(part in n.name for part in INT8_RECIPE["exclude"])]
    del graph
    # The quantiser logs "consider pre-processing" through the root logger; with no handler there, that call
    # would install one (logging.basicConfig) in the user's process. Hold a silent handler while it runs.
    root, quiet = logging.getLogger(), logging.NullHandler()
    root.addHandler(quiet)
    was_disabled, root.disabled = root.disabled, True
    try:
        quantize_dynamic(
            str(src),
            str(out),
            weight_type=QuantType.QInt8,
            per_channel=INT8_RECIPE["per_channel"],
            op_types_to_quantize=INT8_RECIPE["op_types"],
            nodes_to_exclude=exclude,
        )
    finally:
        root.disabled = was_disabled
        root.removeHandler(quiet)
    return Path(out)
