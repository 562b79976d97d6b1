"""The export cache's key memo: a start that finds its export cached reads no weights, and a changed file is
hashed again (its size or modification time moved)."""

from __future__ import annotations

import os

from twostage_integrations.rerank import onnx_export


def test_key_is_memoised_by_path_size_and_mtime(tmp_path, monkeypatch):
    monkeypatch.setenv("TWOSTAGE_CACHE_DIR", str(tmp_path / "cache"))
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"a" * 1000)
    first = onnx_export._hash_files([weights], {"opset": 17})
    assert (tmp_path / "cache" / "onnx" / onnx_export.HASH_MEMO).is_file()
    assert onnx_export._hash_files([weights], {"opset": 18}) != first  # settings are part of the key

    # Same size and mtime: the memo answers without reading the bytes (which did change here).
    stat = weights.stat()
    weights.write_bytes(b"b" * 1000)
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert onnx_export._hash_files([weights], {"opset": 17}) == first

    # A new modification time: hashed again, and the new bytes give a new key.
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    changed = onnx_export._hash_files([weights], {"opset": 17})
    assert changed != first

    # Without a memo the key is the content hash: the same as a fresh computation of the same bytes.
    (tmp_path / "cache" / "onnx" / onnx_export.HASH_MEMO).write_text("not json")
    assert onnx_export._hash_files([weights], {"opset": 17}) == changed
