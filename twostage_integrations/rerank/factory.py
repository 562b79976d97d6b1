"""Pick a reranker from a model name, as ``--rerank-model`` does (the names are read in :mod:`.registry`)."""

from __future__ import annotations

import os

from ..errors import InvalidParameterError
from ..models import resolve_rerank_model
from .base import Reranker
from .registry import CROSS_ENCODER, Provider, hosted_provider, route_for

__all__ = ["Provider", "hosted_provider", "make_reranker"]


def make_reranker(model: str | os.PathLike[str] | None = None, *, backend: str | None = None, **kwargs) -> Reranker:
    """A reranker for a model name, as ``--rerank-model`` reads it.

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

    Args:
        model: A model name or folder, read as above.
        backend: The cross-encoder engine, ``"auto"``, ``"onnx"``, ``"onnx-int8"`` or ``"torch"``; ``None``:
            ``$TWOSTAGE_RERANK_BACKEND``, else ``"auto"``, the faster exact engine on this machine (see
            :class:`~twostage_integrations.CrossEncoderReranker`). An error for other kinds of model.
        **kwargs: The reranker's constructor arguments.

    Returns:
        The reranker the name's row of :data:`~twostage_integrations.rerank.registry.ROUTES` names.

    Raises:
        InvalidParameterError: If an option does not apply to this kind of model (a backend or ``max_length``
            for a hosted model, a backend for a ``rerankers:`` one).

    >>> make_reranker("rerank-v3.5", api_key="...")  # doctest: +SKIP
    CohereReranker(model='rerank-v3.5', base_url=None, on_error='raise')
    >>> make_reranker("rerank-2.5", api_key="...")  # doctest: +SKIP
    VoyageReranker(model='rerank-2.5', base_url=None, on_error='raise')
    """
    name = resolve_rerank_model(model)
    route = route_for(name)
    # An explicit backend only: $TWOSTAGE_RERANK_BACKEND (read later, by the cross-encoder) must not break hosted
    # or rerankers users.
    if backend is not None and "backend" in route.rejects:
        raise InvalidParameterError(f"{name!r} {route.what}; {route.rejects['backend'].format(value=backend)}")
    for option, why in route.rejects.items():
        if option != "backend" and option in kwargs:  # e.g. --stage NAME@max_length=N
            raise InvalidParameterError(f"{name!r} {route.what}; {why.format(value=kwargs[option])}")
    options = {"backend": backend} if route.kind == CROSS_ENCODER else {}
    reranker: Reranker = route.load()(name, **options, **kwargs)
    return reranker
