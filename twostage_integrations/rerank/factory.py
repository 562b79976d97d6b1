"""Pick a reranker from a model name, as ``--rerank-model`` does."""

from __future__ import annotations

import os

from ..errors import InvalidParameterError
from ..models import resolve_rerank_model
from .base import Reranker


def make_reranker(model: str | os.PathLike[str] | None = None, *, backend: str | None = None, **kwargs) -> Reranker:
    """A reranker for ``model``.

    - ``rerank-...`` (``rerank-v3.5``, ``rerank-english-v3.0``...) or ``cohere:<model>``: the Cohere API
      (:class:`~twostage_integrations.CohereReranker`; key from ``CO_API_KEY``/``COHERE_API_KEY``, server from
      ``TWOSTAGE_COHERE_BASE_URL``).
    - ``rerankers:<model>[:<type>]``: any AnswerDotAI ``rerankers`` model
      (:class:`~twostage_integrations.rerank.rerankers.RerankersReranker`), e.g.
      ``rerankers:/path/to/model:cross-encoder``; the end is read as the type (``cross-encoder``, ``t5``,
      ``colbert``, ``flashrank``...) only when it is one the library knows, so paths may contain ``:``.
    - a local folder or ``org/name`` hub id: the cross-encoder. An existing folder always wins, even one
      named ``rerank-...``.
    - ``None``: ``TWOSTAGE_RERANK_MODEL`` (either kind), else the MS MARCO MiniLM-L6 cross-encoder.

    ``backend`` (cross-encoders only): ``"onnx"``, ``"onnx-int8"`` or ``"torch"``; None = ``$TWOSTAGE_RERANK_BACKEND``,
    else ONNX when the onnx extra is installed (see :class:`~twostage_integrations.CrossEncoderReranker`). Other
    keyword arguments go to the reranker's constructor.

    >>> make_reranker("rerank-v3.5", api_key="...")  # doctest: +SKIP
    CohereReranker(model='rerank-v3.5', base_url=None, on_error='raise')
    """
    from .cohere import is_cohere_model

    name = resolve_rerank_model(model)
    if name.startswith("rerankers:"):
        from .rerankers import RerankersReranker

        if backend is not None:  # an explicit choice only, as for Cohere
            raise InvalidParameterError(
                f"{name!r} runs in the rerankers library; a rerank backend ({backend!r}) applies to our cross-encoders"
            )
        return RerankersReranker(name, **kwargs)
    if is_cohere_model(name) and not os.path.exists(name):
        from .cohere import CohereReranker

        if backend is not None:  # an explicit choice only: $TWOSTAGE_RERANK_BACKEND must not break Cohere users
            raise InvalidParameterError(
                f"{name!r} is a hosted Cohere model; a rerank backend ({backend!r}) applies to local cross-encoders"
            )
        return CohereReranker(name, **kwargs)
    from .cross_encoder import CrossEncoderReranker

    return CrossEncoderReranker(name, backend=backend, **kwargs)
