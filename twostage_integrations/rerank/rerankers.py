"""Stage 2 with any AnswerDotAI ``rerankers`` model: Jina, Mixedbread, FlashRank, T5, ColBERT, LLM rankers...

The ``rerankers`` library gives one ``Reranker(model, model_type=...)`` for many architectures and APIs; this
module makes any of them a :class:`~twostage_integrations.rerank.base.Reranker`. Importing it needs neither
``rerankers`` nor torch: the library loads when a :class:`RerankersReranker` is built from a name.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import config
from ..errors import APIKeyError, InvalidParameterError, MissingDependencyError, ModelLoadError, RerankScoresError
from ..extras import require_extra
from ..models import check_model_path, looks_like_path
from .base import BaseReranker
from .registry import RERANKERS_PREFIX  # the registry routes these names here

logger = logging.getLogger(__name__)

# The ``model_type`` values rerankers 0.10 maps to a ranker class (``rerankers.reranker._get_model_type``, a
# local dict the library does not export; "lit5" is left out: its class is not shipped in 0.10).
# tests/test_rerankers_backend.py checks this list against the installed library.
MODEL_TYPES = (
    "cross-encoder",
    "t5",
    "colbert",
    "flashrank",
    "mxbaiv2",
    "llm-layerwise",
    "upr",
    "pylate",
    "monovlm",
    "rankgpt",
    "rankllm",
    "llm-relevance-filter",
    "cohere",
    "jina",
    "voyage",
    "pinecone",
    "isaacus",
    "text-embeddings-inference",
)
# Key variables for the library's API types, read when no api_key= is given (so `--rerank-model` works).
API_KEY_ENVS = {
    "jina": ("JINA_API_KEY",),
    "cohere": ("CO_API_KEY", "COHERE_API_KEY"),
    "voyage": ("VOYAGE_API_KEY",),
    "pinecone": ("PINECONE_API_KEY",),
    "isaacus": ("ISAACUS_API_KEY",),
}
# Rankers that only order the documents (``has_scores=False``): we score them 1/position.
LISTWISE_RANKERS = frozenset({"RankGPTRanker", "RankLLMRanker", "LiT5Ranker"})


def parse_rerankers_name(name: str) -> tuple[str, str | None]:
    """Split a ``rerankers:<model>[:<type>]`` name.

    The type is split off the end only when it is one of :data:`MODEL_TYPES`, so a local path containing ``:``
    still works.

    Args:
        name: The name, with its ``rerankers:`` prefix.

    Returns:
        ``(model, type or None)``.

    Raises:
        InvalidParameterError: If the prefix is missing, no model is named, or the last part is not a type and
            cannot belong to the model name (a hub id has no ``:``; a folder that exists without it).

    >>> parse_rerankers_name("rerankers:/models/run:3:cross-encoder")
    ('/models/run:3', 'cross-encoder')
    >>> parse_rerankers_name("rerankers:mixedbread-ai/mxbai-rerank-base-v1")
    ('mixedbread-ai/mxbai-rerank-base-v1', None)
    """
    if not name.startswith(RERANKERS_PREFIX):
        raise InvalidParameterError(f"{name!r} is not a rerankers model name; write rerankers:<model>[:<type>]")
    rest = name[len(RERANKERS_PREFIX) :]
    model, sep, last = rest.rpartition(":")
    if sep and last in MODEL_TYPES:
        rest, model_type = model, last
    else:
        model_type = None
        if sep and not Path(rest).expanduser().exists() and (not looks_like_path(model) or Path(model).exists()):
            raise InvalidParameterError(
                f"unknown rerankers model type {last!r} in {name!r}; write rerankers:<model>[:<type>] with a type "
                f"from: {', '.join(MODEL_TYPES)} (or no type, to let rerankers guess it from the model name)"
            )
    if not rest.strip():
        raise InvalidParameterError(
            f"{name!r} names no model; write rerankers:<model>[:<type>], e.g. rerankers:/path/to/model:cross-encoder"
        )
    return rest, model_type


def _deps_line(library: Any, cls_name: str) -> str:
    extra = getattr(library.reranker, "DEPS_MAPPING", {}).get(cls_name, "all")
    return f'pip install "rerankers[{extra}]"'


class RerankersReranker(BaseReranker):
    """Rerank with a model from AnswerDotAI's ``rerankers`` library (extra ``rerankers``).

    What the library prints while loading goes to this module's logger, not stdout (``twostage query --json``
    stays JSON).

    Scores are the backend's own (``score_kind`` ``"rerankers"``: a cross-encoder's raw logit, an API's
    relevance score, ColBERT's MaxSim...; compare them only within one model). Listwise rankers (RankGPT,
    RankLLM) give an order without scores: ``rerank_score = 1/position`` (``score_kind`` ``"rerankers_rank"``).
    Results are matched to the hits by position (passed as the library's ``doc_id``), never by text.

    Args:
        model: A ranker the library built (``rerankers.Reranker(...)``, used as is), or a model name or folder
            for ``rerankers.Reranker(model, model_type=..., **kwargs)``; a ``rerankers:`` prefix (the
            ``--rerank-model`` spelling, ``rerankers:<model>[:<type>]``) is parsed.
        model_type: One of :data:`MODEL_TYPES`; ``None``: the library guesses from the name (name it to be
            sure).
        **kwargs: ``rerankers.Reranker``'s options (``lang``, ``api_key``, ``batch_size``, ``device``,
            ``dtype``...); API types read a missing ``api_key`` from :data:`API_KEY_ENVS` (e.g.
            ``JINA_API_KEY``); ``verbose`` defaults to 0.

    Raises:
        InvalidParameterError: If the name, type or options are not ones the library takes, or options are given
            with a ready ranker.
        MissingDependencyError: If the ``rerankers`` extra, or the packages this model type needs, are missing.
        ModelNotFoundError: If a path-like model does not exist.
        ModelLoadError: If the library cannot load the model.
        APIKeyError: If an API model type has no key.

    >>> from twostage_integrations import Hit
    >>> from twostage_integrations.rerank.rerankers import RerankersReranker
    >>> rr = RerankersReranker("path/to/cross-encoder", model_type="cross-encoder")  # doctest: +SKIP
    >>> hits = [Hit(id="1", text="Paris is in France."), Hit(id="2", text="Bananas are yellow.")]
    >>> [h.id for h in rr.rerank("capital of France", hits, top_k=1)]  # doctest: +SKIP
    ['1']
    """

    def __init__(self, model: Any, *, model_type: str | None = None, **kwargs: Any) -> None:
        if not isinstance(model, (str, os.PathLike)):
            if not callable(getattr(model, "rank", None)):
                raise InvalidParameterError(
                    f"model must be a model name/folder or a ranker from rerankers.Reranker(...), got "
                    f"{type(model).__name__}"
                )
            if model_type is not None or kwargs:
                raise InvalidParameterError(
                    "model_type and other options configure rerankers.Reranker(...); a ready ranker takes none"
                )
            self.ranker = model
            self.model_type = model_type
            self.name = RERANKERS_PREFIX + type(model).__name__
        else:
            self.ranker, self.model_type, self.name = self._load(str(model), model_type, kwargs)
        self.score_kind = "rerankers_rank" if type(self.ranker).__name__ in LISTWISE_RANKERS else "rerankers"

    @staticmethod
    def _load(model: str, model_type: str | None, kwargs: dict[str, Any]) -> tuple[Any, str | None, str]:
        if model.startswith(RERANKERS_PREFIX):
            model, parsed = parse_rerankers_name(model)
            if model_type is not None and parsed is not None and parsed != model_type:
                raise InvalidParameterError(f"got model type {parsed!r} in the name and model_type={model_type!r}")
            model_type = model_type or parsed
        if not model.strip():
            raise InvalidParameterError("model must name a rerankers model or a local model folder")
        if looks_like_path(model):  # a missing folder fails before the library (and torch) is imported
            model = str(Path(check_model_path(model, kind="rerank")).expanduser())
        library = require_extra("rerankers", "rerankers", feature="RerankersReranker")
        # The library also accepts its class names ("TransformerRanker") as a type.
        known = (*MODEL_TYPES, *getattr(library.reranker, "DEPS_MAPPING", {}))
        if model_type is not None and model_type not in known:
            raise InvalidParameterError(
                f"unknown rerankers model_type {model_type!r}; pass one of: {', '.join(MODEL_TYPES)} "
                "(or model_type=None to let rerankers guess it from the model name)"
            )
        if model_type in API_KEY_ENVS and kwargs.get("api_key") is None:
            envs = API_KEY_ENVS[model_type]
            key = config.first_set(envs)
            if key is None:
                raise APIKeyError(f"no {model_type} API key: pass api_key=..., or set {' or '.join(envs)}")
            kwargs["api_key"] = key
        kwargs.setdefault("verbose", 0)
        printed = io.StringIO()
        try:
            # The library print()s its warnings, and why it returns None, even with verbose=0.
            with contextlib.redirect_stdout(printed):
                ranker = library.Reranker(model, model_type=model_type, **kwargs)
                cls_name = library.reranker._get_model_type(model, model_type) if ranker is None else ""
        except TypeError as exc:  # options this ranker class does not take, or a required one missing
            raise InvalidParameterError(
                f"rerankers.Reranker({model!r}, model_type={model_type!r}) rejected the options: {exc}; check the "
                "keyword arguments for this model type (API types need api_key=...)"
            ) from exc
        except (OSError, ValueError) as exc:
            first = str(exc).splitlines()[0][:160] if str(exc) else ""
            raise ModelLoadError(
                f"rerankers could not load {model!r} (model_type={model_type!r}; {type(exc).__name__}: {first}); "
                "pass an existing local model folder, or a hub id while online"
            ) from exc
        finally:
            for line in printed.getvalue().splitlines():
                if line.strip():
                    logger.info("rerankers: %s", line.strip())
        if ranker is None:
            said = " ".join(printed.getvalue().split())
            if cls_name not in library.models.AVAILABLE_RANKERS:  # the library's way of saying deps are missing
                raise MissingDependencyError(
                    f"rerankers model type {model_type or cls_name!r} ({cls_name}) needs packages that are not "
                    f"installed; install them with: {_deps_line(library, cls_name)}"
                )
            raise InvalidParameterError(f"rerankers could not make a ranker for {model!r}: {said}")
        name = RERANKERS_PREFIX + model + (f":{model_type}" if model_type else "")
        return ranker, model_type, name

    # -- scoring -------------------------------------------------------------------------------------
    def _scores(self, texts: Sequence[str], ranked: Any) -> list[float]:
        """One score per text, in input order, from the library's ``RankedResults``; results are matched by the
        ``doc_id`` we passed (the position), since texts may repeat."""
        results = list(getattr(ranked, "results", ranked))
        n = len(texts)
        ids = [r.document.doc_id for r in results]
        if len(ids) != n or sorted(i for i in ids if type(i) is int) != list(range(n)):
            raise RerankScoresError(
                f"{self.name} returned {len(results)} results for {n} documents (doc ids {ids[:10]}...); a reranker "
                "must rank every document exactly once"
            )
        scored = getattr(ranked, "has_scores", True) and all(r.score is not None for r in results)
        if not scored and self.score_kind != "rerankers_rank":
            logger.warning("%s returned an order without scores: scoring by 1/position", self.name)
            self.score_kind = "rerankers_rank"
        out = [0.0] * n
        for position, (doc_id, result) in enumerate(zip(ids, results, strict=True), start=1):
            # Listwise results come in ranked order; their own rank numbers start at 0 or 1 depending on the
            # backend, so the position in the list is the one reliable rank.
            out[doc_id] = float(result.score) if scored else 1.0 / position
        return out

    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        """Score texts with the library's ranker.

        Args:
            query: The query text.
            texts: The passages.

        Returns:
            The backend's score per text, in input order (``1/position`` for listwise rankers).

        Raises:
            RerankScoresError: If the library does not rank every text exactly once.
        """
        if not texts:
            return []
        return self._scores(texts, self.ranker.rank(query, list(texts), doc_ids=list(range(len(texts)))))

    async def ascore(self, query: str, texts: Sequence[str]) -> list[float]:
        """Like :meth:`score` through the library's ``rank_async`` (a worker thread in rerankers 0.10).

        Args:
            query: The query text.
            texts: The passages.

        Returns:
            The backend's score per text, in input order.
        """
        if not texts:
            return []
        return self._scores(texts, await self.ranker.rank_async(query, list(texts), list(range(len(texts)))))

    def __repr__(self) -> str:
        return f"RerankersReranker({self.name!r}, ranker={type(self.ranker).__name__})"
