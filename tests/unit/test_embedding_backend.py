"""Choosing the embedding backend (onnx | torch) and reading a sentence-transformers folder for the ONNX embedder.

No weights: folders are made-up configs, and choosing a backend only reads them (embedders load on first use).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from twostage_integrations import embeddings_onnx
from twostage_integrations.embeddings import Embedder, OnnxEmbedder, as_embedder
from twostage_integrations.embeddings_onnx import pool, read_layout, resolve_embedding_backend
from twostage_integrations.errors import InvalidParameterError, MissingDependencyError, ModelLoadError
from twostage_integrations.testing import FakeEmbedder

ENV = "TWOSTAGE_EMBEDDING_BACKEND"
ST = "sentence_transformers.models."


def st_folder(root: Path, *, pooling: str = "mean", modules: tuple[str, ...] = ("Pooling", "Normalize")) -> Path:
    """A sentence-transformers folder as all-MiniLM-L6-v2 ships it (configs only; a placeholder graph file)."""
    root.mkdir(parents=True, exist_ok=True)
    entries = [{"idx": 0, "name": "0", "path": "", "type": f"{ST}Transformer"}]
    for i, kind in enumerate(modules, start=1):
        entries.append({"idx": i, "name": str(i), "path": f"{i}_{kind}", "type": f"{ST}{kind}"})
    (root / "modules.json").write_text(json.dumps(entries))
    flags = {"pooling_mode_cls_token": pooling == "cls", "pooling_mode_mean_tokens": pooling == "mean"}
    flags["pooling_mode_max_tokens"] = pooling == "max"
    (root / "1_Pooling").mkdir(exist_ok=True)
    (root / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 8, **flags}))
    (root / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128, "do_lower_case": True}))
    (root / "config.json").write_text(json.dumps({"hidden_size": 8, "max_position_embeddings": 512}))
    (root / "tokenizer.json").write_text("{}")
    (root / "onnx").mkdir(exist_ok=True)
    (root / "onnx" / "model.onnx").write_bytes(b"placeholder")
    return root


@pytest.fixture
def onnx_installed(monkeypatch):
    monkeypatch.setattr(embeddings_onnx, "_onnx_importable", lambda: True)
    monkeypatch.delenv(ENV, raising=False)


# -- backend choice ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value, expected", [("onnx", "onnx"), ("torch", "torch"), (" ONNX ", "onnx")])
def test_env_var_values(monkeypatch, onnx_installed, value, expected):
    monkeypatch.setenv(ENV, value)
    assert resolve_embedding_backend(None) == expected


def test_argument_wins_over_env_var(monkeypatch, onnx_installed):
    monkeypatch.setenv(ENV, "onnx")
    assert resolve_embedding_backend("torch") == "torch"


def test_bad_env_value_names_the_variable(monkeypatch, onnx_installed):
    monkeypatch.setenv(ENV, "tensorflow")
    with pytest.raises(InvalidParameterError, match=rf"'tensorflow' \(from \${ENV}\).*onnx, torch"):
        resolve_embedding_backend(None)


def test_bad_argument_is_a_typed_error(onnx_installed):
    with pytest.raises(InvalidParameterError, match="unknown embedding backend 'gpu'") as info:
        resolve_embedding_backend("gpu")
    assert ENV not in str(info.value)


def test_missing_onnx_extra_means_torch_by_default_and_an_error_when_asked(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.setattr(embeddings_onnx, "_onnx_importable", lambda: False)
    folder = st_folder(tmp_path / "m")
    assert resolve_embedding_backend(None, folder) == "torch"
    with pytest.raises(MissingDependencyError, match="onnxruntime and tokenizers"):
        resolve_embedding_backend("onnx", folder)


def test_default_is_onnx_for_a_folder_it_runs(onnx_installed, tmp_path):
    assert resolve_embedding_backend(None, st_folder(tmp_path / "m")) == "onnx"
    assert resolve_embedding_backend(None, st_folder(tmp_path / "cls", pooling="cls")) == "onnx"


@pytest.mark.parametrize(
    "kwargs", [{"pooling": "max"}, {"modules": ("Pooling", "Dense", "Normalize")}], ids=["max-pooling", "dense"]
)
def test_default_is_torch_for_a_folder_it_does_not_run(onnx_installed, tmp_path, kwargs):
    assert resolve_embedding_backend(None, st_folder(tmp_path / "m", **kwargs)) == "torch"


def test_default_is_torch_for_a_hub_id_not_in_the_local_cache(onnx_installed, monkeypatch):
    monkeypatch.setattr(embeddings_onnx, "_cached_snapshot", lambda name: None)
    assert resolve_embedding_backend(None, "org/not-cached") == "torch"


def test_as_embedder_builds_the_chosen_class_without_loading(monkeypatch, onnx_installed, tmp_path):
    folder = st_folder(tmp_path / "m")
    onnx, torch = as_embedder(str(folder), backend="onnx"), as_embedder(str(folder), backend="torch")
    assert isinstance(onnx, OnnxEmbedder) and isinstance(torch, Embedder)
    assert onnx.name == torch.name == str(folder)  # what the collection records: the same for both backends
    assert isinstance(as_embedder(str(folder)), OnnxEmbedder)
    monkeypatch.setenv(ENV, "torch")
    assert isinstance(as_embedder(str(folder)), Embedder)
    fake = FakeEmbedder()
    assert as_embedder(fake, backend="onnx") is fake


# -- reading the folder ---------------------------------------------------------------------------------------------
def test_layout_as_sentence_transformers_reads_it(tmp_path):
    layout = read_layout(st_folder(tmp_path / "m", pooling="cls"))
    assert (layout.pooling, layout.max_length, layout.lower_case, layout.dimension) == ("cls", 128, True, 8)
    assert layout.transformer_dir == tmp_path / "m"


def test_plain_transformers_folder_is_mean_pooled(tmp_path):
    folder = st_folder(tmp_path / "m")
    (folder / "modules.json").unlink()
    (folder / "sentence_bert_config.json").unlink()
    layout = read_layout(folder)
    assert (layout.pooling, layout.max_length, layout.lower_case) == ("mean", 512, False)


def test_unsupported_pooling_names_the_mode_and_suggests_torch(tmp_path):
    with pytest.raises(ModelLoadError, match=r"pools with max.*backend='torch'"):
        read_layout(st_folder(tmp_path / "m", pooling="max"))


def test_extra_module_is_refused(tmp_path):
    with pytest.raises(ModelLoadError, match=r"Dense.*backend='torch'"):
        read_layout(st_folder(tmp_path / "m", modules=("Pooling", "Dense")))


def test_missing_fast_tokenizer_is_refused(tmp_path):
    folder = st_folder(tmp_path / "m")
    (folder / "tokenizer.json").unlink()
    with pytest.raises(ModelLoadError, match="tokenizer.json"):
        read_layout(folder)


# -- pooling ----------------------------------------------------------------------------------------------------
def test_mean_pooling_ignores_padding_and_normalises():
    rng = np.random.default_rng(0)
    hidden = rng.normal(size=(2, 4, 3)).astype(np.float32)
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1]])
    out = pool(hidden, mask, "mean")
    expected = hidden[0, :2].mean(axis=0)
    np.testing.assert_allclose(out[0], expected / np.linalg.norm(expected), rtol=1e-6)
    hidden[0, 2:] = 1e3  # pads change nothing
    np.testing.assert_allclose(pool(hidden, mask, "mean")[0], out[0], rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-6)


def test_cls_pooling_takes_the_first_token():
    hidden = np.arange(24, dtype=np.float32).reshape(2, 4, 3)
    out = pool(hidden, np.ones((2, 4)), "cls")
    np.testing.assert_allclose(out[1], hidden[1, 0] / np.linalg.norm(hidden[1, 0]), rtol=1e-6)
