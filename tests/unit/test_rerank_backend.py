"""Choosing the cross-encoder backend: no model weights needed (bad names and missing packages fail first)."""

from __future__ import annotations

import pytest

from twostage_integrations.errors import InvalidParameterError, MissingDependencyError
from twostage_integrations.rerank import make_reranker
from twostage_integrations.rerank import onnx as onnx_engine
from twostage_integrations.rerank.cross_encoder import CrossEncoderReranker


def test_bad_backend_name_names_the_choices():
    with pytest.raises(InvalidParameterError, match="torch, onnx, onnx-int8"):
        CrossEncoderReranker("/no/such/model", backend="tensorrt")


def test_bad_backend_from_env(monkeypatch):
    monkeypatch.setenv("TWOSTAGE_RERANK_BACKEND", "onnx-fp16")
    with pytest.raises(InvalidParameterError, match=r"TWOSTAGE_RERANK_BACKEND.*torch, onnx, onnx-int8"):
        CrossEncoderReranker("/no/such/model")


@pytest.mark.parametrize("backend", ["onnx", "onnx-int8"])
def test_missing_onnxruntime_gives_the_install_line(monkeypatch, backend):
    real = onnx_engine.importlib.util.find_spec
    monkeypatch.setattr(
        onnx_engine.importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a)
    )
    with pytest.raises(MissingDependencyError, match=r'pip install "twostage-integrations\[onnx\]"'):
        CrossEncoderReranker("/no/such/model", backend=backend)
    assert onnx_engine.resolve_backend(None) == "torch"  # the default falls back instead of failing


def test_default_needs_the_exporter_too(monkeypatch):
    # chromadb installs onnxruntime for everyone; without the onnx package the default must stay torch
    real = onnx_engine.importlib.util.find_spec
    monkeypatch.setattr(
        onnx_engine.importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a)
    )
    monkeypatch.delenv("TWOSTAGE_RERANK_BACKEND", raising=False)
    assert onnx_engine.resolve_backend(None) == "torch"
    assert onnx_engine.resolve_backend("onnx") == "onnx"  # an explicit choice can still use a shipped onnx/


def test_default_and_env(monkeypatch):
    # The default is "auto" (timed per machine, rerank/autopick.py); with one exact engine installed, that one.
    monkeypatch.delenv("TWOSTAGE_RERANK_BACKEND", raising=False)
    installed = onnx_engine.exact_engines()
    expected = "auto" if len(installed) > 1 else (installed or ["torch"])[0]
    assert onnx_engine.resolve_backend(None) == expected
    assert onnx_engine.resolve_backend("AUTO") == expected
    monkeypatch.setenv("TWOSTAGE_RERANK_BACKEND", "Torch")
    assert onnx_engine.resolve_backend(None) == "torch"
    assert onnx_engine.resolve_backend("torch") == "torch"


def test_backend_is_for_cross_encoders_only(monkeypatch):
    monkeypatch.setenv("CO_API_KEY", "test-key")
    with pytest.raises(InvalidParameterError, match="local cross-encoders"):
        make_reranker("rerank-v3.5", backend="onnx")
    monkeypatch.setenv("TWOSTAGE_RERANK_BACKEND", "onnx")  # the env var alone must not break Cohere users
    pytest.importorskip("cohere")
    assert make_reranker("rerank-v3.5").name == "cohere:rerank-v3.5"


def test_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("TWOSTAGE_CACHE_DIR", str(tmp_path))
    assert onnx_engine.cache_dir() == tmp_path / "onnx"
    monkeypatch.delenv("TWOSTAGE_CACHE_DIR")
    assert onnx_engine.cache_dir().parts[-2:] == ("twostage", "onnx")


def test_activation_and_max_length_as_sentence_transformers_reads_them(tmp_path):
    import json

    (tmp_path / "config.json").write_text(json.dumps({"id2label": {"0": "a"}, "max_position_embeddings": 512}))
    assert onnx_engine.read_activation(tmp_path) == "sigmoid"  # 1 label, nothing saved
    assert onnx_engine.read_max_length(tmp_path) == 512
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 1e30}))
    assert onnx_engine.read_max_length(tmp_path) == 512  # "no limit" falls back to the positions
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 192}))
    assert onnx_engine.read_max_length(tmp_path) == 192
    (tmp_path / "config_sentence_transformers.json").write_text(
        json.dumps({"activation_fn": "torch.nn.modules.linear.Identity"})
    )
    assert onnx_engine.read_activation(tmp_path) == "identity"
    (tmp_path / "config.json").write_text(json.dumps({"id2label": {"0": "a", "1": "b"}}))
    (tmp_path / "config_sentence_transformers.json").unlink()
    assert onnx_engine.read_activation(tmp_path) == "identity"  # multi-label default
