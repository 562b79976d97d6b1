"""The fast tier: ``python -m pytest tests/unit`` needs no model weights and runs in well under a minute.

Use the fakes here (``fake_embedder``, ``fake_reranker``, ``fake_recall``) for plumbing tests; anything that
needs a real model or real data belongs in ``tests/``. A guard makes any test in this folder fail if it
constructs a sentence-transformers model (``SentenceTransformer``/``CrossEncoder``) or an ONNX Runtime
session, whether the library was imported before the test or during it.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from twostage_integrations.testing import FakeEmbedder, FakeReranker

# module -> classes whose constructor reads model weights
GUARDED = {
    "sentence_transformers": ("SentenceTransformer", "CrossEncoder"),
    "onnxruntime": ("InferenceSession",),
}


class RealWeightsInUnitTier(AssertionError):
    """A test in tests/unit tried to load real model weights."""


def _refuse(qualname: str) -> Callable[..., Any]:
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        raise RealWeightsInUnitTier(
            f"{qualname}(...) in the fast tier (tests/unit): use the fake_embedder/fake_reranker fixtures, or move "
            f"the test to tests/ where real models are allowed"
        )

    return __init__


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Patches guarded constructors as soon as their module is imported (imports stay lazy and cheap)."""

    def __init__(self, patch: Callable[[str, Any], None]) -> None:
        self.patch = patch

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in GUARDED:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_patch(module: Any) -> None:
            exec_module(module)
            self.patch(fullname, module)

        spec.loader.exec_module = exec_and_patch  # type: ignore[method-assign]
        return spec


@pytest.fixture(autouse=True)
def _no_real_weights(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def patch(name: str, module: Any) -> None:
        for cls_name in GUARDED[name]:
            cls = getattr(module, cls_name, None)
            if cls is not None:
                monkeypatch.setattr(cls, "__init__", _refuse(f"{name}.{cls_name}"))

    for name in GUARDED:
        if name in sys.modules:
            patch(name, sys.modules[name])
    finder = _PatchOnImport(patch)
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)  # monkeypatch undoes the constructor patches after the test


@pytest.fixture
def fake_embedder() -> FakeEmbedder:
    return FakeEmbedder()


@pytest.fixture
def fake_reranker() -> FakeReranker:
    return FakeReranker()


@pytest.fixture
def fake_recall(tmp_path, fake_embedder):
    """An empty :class:`ChromaRecall` in a fresh embedded Chroma (tmp dir) embedding with the FakeEmbedder."""
    from twostage_integrations import ChromaRecall

    return ChromaRecall("unit", path=tmp_path / "chroma", embedding_model=fake_embedder, progress=False)


@pytest.fixture
def weights_guard() -> tuple[dict[str, tuple[str, ...]], type[AssertionError]]:
    """(the guarded module -> classes table, the error it raises), for the guard's own test."""
    return GUARDED, RealWeightsInUnitTier


NOTES = {
    "aspirin.md": "Aspirin lowers the risk of a second stroke in adults who already had one.",
    "statins.md": "Statins lower LDL cholesterol and cut heart attacks in people at high risk.",
}


@pytest.fixture
def notes_db(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """:data:`NOTES` ingested into collection `notes` of a fresh embedded Chroma by the real CLI, embedded with
    the FakeEmbedder; returns the database path."""
    from typer.testing import CliRunner

    import twostage_integrations.recall.chroma as chroma
    from twostage_integrations.cli import app

    # the CLI names embedders by model id; every ChromaRecall it builds gets the fake one instead
    monkeypatch.setattr(chroma, "as_embedder", lambda model=None: FakeEmbedder())
    (tmp_path / "notes").mkdir()
    for name, text in NOTES.items():
        (tmp_path / "notes" / name).write_text(text)
    path = str(tmp_path / "db")
    result = CliRunner().invoke(app, ["ingest", str(tmp_path / "notes"), "-c", "notes", "--db", path])
    assert result.exit_code == 0, result.output
    return path
