"""One pipeline spec: recall kind and depth, the rerank stages, fusion and ``top_k``, read in one place.

A spec is written as a string, a dict, or TOML (the dict's keys as tables); all three read into one
:class:`PipelineSpec`, and each converts back (``to_string``, ``to_dict``, ``to_toml``) without loss. A preset
(:data:`PRESETS`) is a named spec string. Anything that cannot be read raises
:class:`~twostage_integrations.errors.PipelineSpecError`: one line naming the bad token and showing a valid
example. See docs/pipeline_spec.md.

The string grammar (steps joined by ``>``, spaces around it optional)::

    spec    := recall (" > " stage)+ [" > fuse=" METHOD[":" WEIGHT]] [" > top_k=" N]
    recall  := KIND[":" LIMIT]["@" rrf_k=K "," per_arm=N]     KIND: dense | bm25 | hybrid; LIMIT: 20
    stage   := "none" | MODEL[":" KEEP]["@" backend=B "," max_length=N "," long_docs=L "," window=W "," stride=S]

- ``LIMIT``: candidates recalled (default 20). ``rrf_k`` and ``per_arm`` (candidates per arm) tune ``hybrid``.
- ``MODEL``: what ``--rerank-model`` takes (a folder, a hub id, ``cohere:NAME``, ``rerankers:PATH:TYPE``...) or
  ``default`` (``$TWOSTAGE_RERANK_MODEL``, else the MiniLM-L6 cross-encoder). As in ``eval --stage``, a ``:``
  suffix that is not a number belongs to the model (``rerankers:/p:cross-encoder`` keeps all), and an ``@``
  not followed by ``key=value`` options belongs to a path. ``KEEP``: hits the stage passes on (default all).
  ``backend``: auto, onnx, onnx-int8 or torch (default ``$TWOSTAGE_RERANK_BACKEND``, else auto: the faster
  of ONNX fp32 and torch on this machine, never int8); ``max_length``: tokens per (query, passage) pair
  (default the model's); ``long_docs``: first, max or top2mean, with ``window``/``stride`` in tokens
  (docs/stage2.md "Long documents").
- ``none``: no rerank stage (recall order, cut to ``top_k``); it is then the only stage.
- ``fuse=rrf:0.9``: fuse the last stage's order with its input order (``rrf`` of ranks or ``minmax`` of
  scores; weight 1 = the reranker's order, 0 = the input order; default weight 0.9).
- ``top_k``: hits returned (default 5).

Examples: ``hybrid:20 > default > top_k=5`` (the ``exact`` preset), ``bm25:50 > none > top_k=10``,
``hybrid:100@rrf_k=60 > default:30@backend=onnx-int8,max_length=64 > default > fuse=rrf:0.9 > top_k=5``.
Model names cannot contain ``>``, end in ``:NUMBER``, or carry an ``@key=value`` tail (they would read as
the grammar's own tokens). ``eval``/``bench --stage`` take one ``stage`` (:func:`parse_stage_token`).

>>> spec = PipelineSpec.parse("hybrid:100 > default:30@backend=onnx-int8 > default > top_k=5")
>>> spec.stages[0]
StageSpec(model=None, keep=30, backend='onnx-int8', max_length=None, long_docs=None, window=None, stride=None)
>>> PipelineSpec.from_dict(spec.to_dict()) == PipelineSpec.from_toml(spec.to_toml()) == spec
True
>>> str(resolve("exact"))
'hybrid:20 > default > top_k=5'
"""

from .build import build_recall, build_reranker, recall_over, spec_from
from .core import FusionSpec, PipelineSpec, RecallSpec, StageSpec, parse_stage_token
from .presets import DEFAULT_PRESET, PRESETS, default_stages, load_toml, parse_spec, resolve

__all__ = [
    "DEFAULT_PRESET",
    "PRESETS",
    "FusionSpec",
    "PipelineSpec",
    "RecallSpec",
    "StageSpec",
    "build_recall",
    "build_reranker",
    "default_stages",
    "load_toml",
    "parse_spec",
    "parse_stage_token",
    "recall_over",
    "resolve",
    "spec_from",
]
