"""The model to fine-tune: an existing cross-encoder (continue training) or a plain encoder (new head)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import InvalidParameterError, ModelLoadError
from ..models import RERANK_MODEL_ENV, load_model
from ..validation import check_positive_int


def is_cross_encoder(base: str | os.PathLike[str]) -> bool:
    """Whether ``base`` already has a sequence-classification head (from its ``config.json``:
    ``architectures`` such as ``BertForSequenceClassification``). A plain encoder (``BertModel``, a
    sentence-transformers embedding model) gets a new 1-logit head instead."""
    config = _config(base)
    return any(str(a).endswith("ForSequenceClassification") for a in config.get("architectures") or [])


def _config(base: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(base).expanduser()
    if path.is_dir():
        file = path / "config.json"
        if not file.is_file():
            raise ModelLoadError(f"{path} has no config.json: pass a Hugging Face / sentence-transformers model folder")
        return json.loads(file.read_text(encoding="utf-8"))
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(base)).to_dict()
    except OSError as exc:
        raise ModelLoadError(
            f"cannot read the config of {base!r} (offline and not cached?): pass a local model folder"
        ) from exc


def load_base(
    base: str | os.PathLike[str], *, max_length: int = 256, layers: int | Sequence[int] | None = None, seed: int = 0
) -> tuple[Any, dict[str, Any]]:
    """A sentence-transformers ``CrossEncoder`` with one logit, ready to train, and what was done to it.

    Plain encoder: a new 1-logit head, and the BERT pooler re-initialised to identity. Encoders trained
    with mean pooling (all-MiniLM-L6-v2 and most sentence-transformers models) never trained their pooler;
    it squashes ``[CLS]`` to about 0.05 whatever the input, and a head on top of it learns nothing (the loss
    stays at the constant predictor's). ``layers``: keep N transformer layers (a cheaper reranker, e.g. the
    first stage of a :class:`~twostage_integrations.Cascade`); see :func:`keep_layers`.
    """
    from sentence_transformers import CrossEncoder
    from transformers import set_seed

    set_seed(seed)  # the new head's initial weights
    plain = not is_cross_encoder(base)
    model = load_model(
        str(base),
        lambda name, local_only: CrossEncoder(name, num_labels=1, max_length=max_length, local_files_only=local_only),
        kind="rerank",
        env_var=RERANK_MODEL_ENV,
    )
    hf = model[0].model
    if hf.config.num_labels != 1:
        raise InvalidParameterError(
            f"{base} has {hf.config.num_labels} output labels; binary cross-entropy fine-tuning needs a 1-logit "
            "reranker or a plain encoder"
        )
    info: dict[str, Any] = {"plain_encoder": plain, "pooler_reset": False, "layers": hf.config.num_hidden_layers}
    if plain:
        info["pooler_reset"] = reset_pooler(hf)
    if layers is not None:
        info["layers_before"] = hf.config.num_hidden_layers
        info["layers_kept"] = keep_layers(hf, layers)
        info["layers"] = len(info["layers_kept"])
    return model, info


def reset_pooler(hf_model: Any) -> bool:
    """Set the BERT-style pooler's dense layer to identity (weight = I, bias = 0); False if there is none."""
    import torch

    pooler = getattr(getattr(hf_model, "base_model", hf_model), "pooler", None)
    dense = getattr(pooler, "dense", None)
    if dense is None:
        return False
    with torch.no_grad():
        dense.weight.copy_(torch.eye(*dense.weight.shape))
        dense.bias.zero_()
    return True


def keep_layers(hf_model: Any, layers: int | Sequence[int]) -> list[int]:
    """Keep some transformer layers of a BERT-style encoder; returns the indices kept (0-based, in order).

    ``layers`` = N keeps the first N; a list of indices keeps exactly those (``[0, 5]``: the first and the
    last of six). Measured on SciFact, cutting the 6-layer SciFact cross-encoder: neither ``2`` nor
    ``[0, 5]`` learned in one round of 13,273 pairs (loss at the constant predictor's, 0.47-0.51, where the
    6-layer model from a plain encoder is at 0.29 by step 150). In all-MiniLM-L6-v2 ``[CLS]`` is nearly the
    same vector for every input until the last two layers (spread over 64 pairs 0.03-0.14, then 0.5 and
    3.6), so ``[0, 5]`` gives the head a varying input (2.3), but two layers still have to learn the
    query-document interaction from scratch.
    """
    encoder: Any = getattr(getattr(hf_model, "base_model", hf_model), "encoder", None)
    stack = getattr(encoder, "layer", None)
    if encoder is None or stack is None:
        raise InvalidParameterError(
            f"--layers works on BERT-style encoders (base_model.encoder.layer); {type(hf_model).__name__} has none"
        )
    total = len(stack)
    if isinstance(layers, int):
        n = check_positive_int(layers, "layers")
        if n > total:
            raise InvalidParameterError(f"layers={n} but the base has only {total} transformer layers")
        keep = list(range(n))
    else:
        keep = [int(i) for i in layers]
        if not keep or sorted(set(keep)) != keep or not all(0 <= i < total for i in keep):
            raise InvalidParameterError(
                f"layers must be increasing indices in 0..{total - 1} without repeats, got {list(layers)!r}"
            )
    import torch

    encoder.layer = torch.nn.ModuleList([stack[i] for i in keep])
    hf_model.config.num_hidden_layers = len(keep)
    return keep


def parse_layers(text: str) -> int | list[int]:
    """``"2"`` -> 2 (the first two, see :func:`keep_layers`); ``"0,5"`` -> ``[0, 5]`` (exactly those)."""
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise InvalidParameterError(f"--layers takes a count (2) or layer indices (0,5), got {text!r}") from None
    return values[0] if len(parts) == 1 else values
