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
        cut_layers(model, info, layers)
    return model, info


def cut_layers(model: Any, info: dict[str, Any], layers: int | Sequence[int]) -> None:
    """:func:`keep_layers` on a loaded ``CrossEncoder``, recording the cut in ``info`` (from :func:`load_base`)."""
    info["layers_before"] = info["layers"]
    info["layers_kept"] = keep_layers(model[0].model, layers)
    info["layers"] = len(info["layers_kept"])


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


LEAST_USEFUL = "least-useful"
CHOICE_PAIRS = 256  # training pairs scored per candidate when choosing which layer to drop


def keep_layers(hf_model: Any, layers: int | Sequence[int]) -> list[int]:
    """Keep some transformer layers of a BERT-style encoder; returns the indices kept (0-based, in order).

    ``layers`` = N keeps the first N; a list of indices keeps exactly those (``[0, 5]``: the first and the
    last of six). This cuts at once; :func:`finetune` removes layers of a trained cross-encoder one at a time
    instead (:func:`layer_cuts`), because a cut of several layers at once does not learn: cutting the 6-layer
    SciFact cross-encoder to ``2`` or ``[0, 5]`` left the loss at the constant predictor's (0.47-0.51) for a
    whole round of 13,273 pairs. In all-MiniLM-L6-v2 ``[CLS]`` is nearly the same vector for every input
    until the last two layers (spread over 64 pairs 0.03-0.14, then 0.5 and 3.6).
    """
    encoder: Any = getattr(getattr(hf_model, "base_model", hf_model), "encoder", None)
    stack = getattr(encoder, "layer", None)
    if encoder is None or stack is None:
        raise InvalidParameterError(
            f"--layers works on BERT-style encoders (base_model.encoder.layer); {type(hf_model).__name__} has none"
        )
    keep = _kept_indices(layers, len(stack))
    import torch

    encoder.layer = torch.nn.ModuleList([stack[i] for i in keep])
    hf_model.config.num_hidden_layers = len(keep)
    return keep


def _kept_indices(layers: int | Sequence[int], total: int) -> list[int]:
    if isinstance(layers, int):
        n = check_positive_int(layers, "layers")
        if n > total:
            raise InvalidParameterError(f"layers={n} but the base has only {total} transformer layers")
        return list(range(n))
    keep = [int(i) for i in layers]
    if not keep or sorted(set(keep)) != keep or not all(0 <= i < total for i in keep):
        raise InvalidParameterError(
            f"layers must be increasing indices in 0..{total - 1} without repeats, got {list(layers)!r}"
        )
    return keep


def layer_count(base: str | os.PathLike[str]) -> int:
    """How many transformer layers ``base`` has (``num_hidden_layers`` in its config)."""
    n = _config(base).get("num_hidden_layers")
    if not isinstance(n, int):
        raise InvalidParameterError(f"--layers works on BERT-style encoders; {base} has no num_hidden_layers")
    return n


def layer_cuts(layers: int | Sequence[int], total: int, *, gradual: bool) -> list[int | list[int] | str]:
    """The layer cut of each training round on the way from ``total`` layers to ``layers``.

    Each entry is what :func:`keep_layers` is given for that round's model (indices into *its* stack), or
    :data:`LEAST_USEFUL`: drop the layer :func:`least_useful_layer` picks. ``gradual=False`` (a plain encoder:
    no trained head to keep working) cuts once. ``gradual=True`` removes one layer per round: the listed
    indices' complement from the highest down, or for a count N, the least useful layer each time.
    """
    keep = _kept_indices(layers, total)
    if not gradual:
        return [layers if isinstance(layers, int) else keep]
    if isinstance(layers, int):
        return [LEAST_USEFUL] * (total - len(keep))
    cuts: list[int | list[int] | str] = []
    current = list(range(total))
    for drop in sorted(set(current) - set(keep), reverse=True):
        cuts.append([i for i, layer in enumerate(current) if layer != drop])
        current.remove(drop)
    return cuts


def least_useful_layer(model: Any, pairs: Sequence[Any], *, batch_size: int = 64) -> int:
    """The position (in ``model``'s current stack) of the layer whose removal hurts ``pairs`` least.

    ``model``: a sentence-transformers ``CrossEncoder`` with a trained head; ``pairs``: objects with ``query``,
    ``passage`` and a 0/1 ``label``, both labels present. Each candidate is scored by the ROC AUC of the
    model's scores on ``pairs`` with that layer left out (the module list is swapped, no copies). Measured on
    SciFact cross-encoders: the first choice costs nothing (AUC 0.977 -> 0.980 on 400 training pairs), while
    a fixed "first two" cut gives every input the same score.
    """
    import torch
    from sklearn.metrics import roc_auc_score

    labels = [int(p.label) for p in pairs]
    if len(set(labels)) < 2:
        raise InvalidParameterError("choosing a layer to drop needs positive and negative pairs")
    hf = model[0].model
    encoder = hf.base_model.encoder
    stack, n = encoder.layer, hf.config.num_hidden_layers
    if len(stack) < 2:
        raise InvalidParameterError("the model has one transformer layer left: nothing to drop")
    texts = [(p.query, p.passage) for p in pairs]
    aucs = []
    try:
        for i in range(len(stack)):
            encoder.layer = torch.nn.ModuleList([m for j, m in enumerate(stack) if j != i])
            hf.config.num_hidden_layers = len(stack) - 1
            scores = model.predict(texts, batch_size=batch_size, show_progress_bar=False)
            aucs.append(float(roc_auc_score(labels, scores)))
    finally:
        encoder.layer, hf.config.num_hidden_layers = stack, n
    return max(range(len(aucs)), key=aucs.__getitem__)


def parse_layers(text: str) -> int | list[int]:
    """``"2"`` -> 2 (the first two, see :func:`keep_layers`); ``"0,5"`` -> ``[0, 5]`` (exactly those)."""
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise InvalidParameterError(f"--layers takes a count (2) or layer indices (0,5), got {text!r}") from None
    return values[0] if len(parts) == 1 else values
