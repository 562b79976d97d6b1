"""Pick a reranker from a model name, as ``--rerank-model`` does."""

from __future__ import annotations

import os
from typing import Literal

from ..errors import InvalidParameterError
from ..models import resolve_rerank_model
from .base import Reranker

Provider = Literal["cohere", "voyage"]


def hosted_provider(name: str) -> Provider | None:
    """Which hosted API a model name means, or None for a local cross-encoder.

    An explicit ``cohere:``/``voyage:`` prefix wins; then Voyage's own model names (``rerank-2.5``,
    ``rerank-2.5-lite``, ``rerank-2``, ``rerank-2-lite``, ``rerank-1``, ``rerank-lite-1``); then any other
    ``rerank-...`` is Cohere's (``rerank-v3.5``, ``rerank-english-v3.0``...). Paths are not checked here.

    >>> [hosted_provider(n) for n in ("rerank-2.5", "voyage:x", "rerank-v3.5", "cohere:rerank-2", "org/ce")]
    ['voyage', 'voyage', 'cohere', 'cohere', None]
    """
    from .cohere import COHERE_PREFIX
    from .voyage import is_voyage_model

    if name.startswith(COHERE_PREFIX):
        return "cohere"
    if is_voyage_model(name):
        return "voyage"
    if name.startswith("rerank-"):
        return "cohere"
    return None


def make_reranker(model: str | os.PathLike[str] | None = None, *, backend: str | None = None, **kwargs) -> Reranker:
    """A reranker for ``model``.

    - Voyage's names (``rerank-2.5``, ``rerank-2.5-lite``, ``rerank-2``, ``rerank-2-lite``, ``rerank-1``,
      ``rerank-lite-1``) or ``voyage:<model>``: the Voyage API (:class:`~twostage_integrations.VoyageReranker`;
      key from ``VOYAGE_API_KEY``, server from ``TWOSTAGE_VOYAGE_BASE_URL``).
    - any other ``rerank-...`` (``rerank-v3.5``, ``rerank-english-v3.0``...) or ``cohere:<model>``: the Cohere API
      (:class:`~twostage_integrations.CohereReranker`; key from ``CO_API_KEY``/``COHERE_API_KEY``, server from
      ``TWOSTAGE_COHERE_BASE_URL``).
    - ``rerankers:<model>[:<type>]``: any AnswerDotAI ``rerankers`` model
      (:class:`~twostage_integrations.rerank.rerankers.RerankersReranker`), e.g.
      ``rerankers:/path/to/model:cross-encoder``; the end is read as the type (``cross-encoder``, ``t5``,
      ``colbert``, ``flashrank``...) only when it is one the library knows, so paths may contain ``:``.
    - a local folder or ``org/name`` hub id: the cross-encoder. An existing folder always wins, even one
      named ``rerank-...``.
    - ``None``: ``TWOSTAGE_RERANK_MODEL`` (any kind), else the MS MARCO MiniLM-L6 cross-encoder.

    ``backend`` (cross-encoders only): ``"onnx"``, ``"onnx-int8"`` or ``"torch"``; None = ``$TWOSTAGE_RERANK_BACKEND``,
    else ONNX when the onnx extra is installed (see :class:`~twostage_integrations.CrossEncoderReranker`). Other
    keyword arguments go to the reranker's constructor.

    >>> make_reranker("rerank-v3.5", api_key="...")  # doctest: +SKIP
    CohereReranker(model='rerank-v3.5', base_url=None, on_error='raise')
    >>> make_reranker("rerank-2.5", api_key="...")  # doctest: +SKIP
    VoyageReranker(model='rerank-2.5', base_url=None, on_error='raise')
    """
    name = resolve_rerank_model(model)
    if name.startswith("rerankers:"):
        from .rerankers import RerankersReranker

        if backend is not None:  # an explicit choice only, as for hosted models
            raise InvalidParameterError(
                f"{name!r} runs in the rerankers library; a rerank backend ({backend!r}) applies to our cross-encoders"
            )
        return RerankersReranker(name, **kwargs)
    provider = hosted_provider(name)
    if provider is not None and not os.path.exists(name):
        if backend is not None:  # an explicit choice only: $TWOSTAGE_RERANK_BACKEND must not break hosted users
            raise InvalidParameterError(
                f"{name!r} is a hosted {provider.capitalize()} model; a rerank backend ({backend!r}) applies to "
                f"local cross-encoders"
            )
        if "max_length" in kwargs:  # e.g. --stage NAME@max_length=N
            raise InvalidParameterError(
                f"{name!r} is a hosted {provider.capitalize()} model; a token limit (max_length) applies to local "
                "cross-encoders only"
            )
        if provider == "voyage":
            from .voyage import VoyageReranker

            return VoyageReranker(name, **kwargs)
        from .cohere import CohereReranker

        return CohereReranker(name, **kwargs)
    from .cross_encoder import CrossEncoderReranker

    return CrossEncoderReranker(name, backend=backend, **kwargs)
