"""Embeddings for stage 1: the :class:`BaseEmbedder` contract and the sentence-transformers :class:`Embedder`."""

from __future__ import annotations

import gc
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from .models import EMBEDDING_MODEL_ENV, load_model, resolve_embedding_model

if TYPE_CHECKING:
    from .embeddings_onnx import OnnxEncoder


class BaseEmbedder(ABC):
    """What stage 1 needs from an embedding model: ``embed`` documents, ``embed_query`` one query.

    Subclasses implement :meth:`embed` and :attr:`dimension`; models that embed queries differently from
    documents (instruction prefixes...) override :meth:`embed_queries` too.

    :meth:`cached_queries` embeds many queries in one batched pass up front and serves them to
    ``embed_query`` inside a ``with`` block (what evaluation does; recall code needs no change).

    Args:
        name: The model's name. It is recorded in the collection, so a query with another model is reported.
        batch_size: Texts per forward pass.
    """

    def __init__(self, name: str, *, batch_size: int = 64) -> None:
        self.name = name
        self.batch_size = batch_size
        self._query_cache: dict[str, np.ndarray] = {}

    @property
    @abstractmethod
    def dimension(self) -> int:
        """Length of one vector."""

    @abstractmethod
    def embed(self, texts: Sequence[str], *, progress: bool = False, desc: str = "embedding") -> np.ndarray:
        """Embed documents.

        Args:
            texts: The passages.
            progress: Show a progress bar over the texts.
            desc: The progress bar's label.

        Returns:
            A ``(len(texts), dimension)`` float32 array, one row per text in input order.
        """

    def unload(self) -> None:
        """Free the loaded model, if any; the next call loads it again.

        ``twostage ingest`` calls it once every passage is embedded: the BM25 save that follows needs the memory
        more than the finished embedder does (at 200,000 passages this keeps about 260 MiB of ONNX model and
        buffers out of the ingest's peak).
        """
        if self.__dict__.pop("model", None) is not None:
            gc.collect()  # a torch module holds reference cycles; free them now, not at some later collection

    def embed_queries(self, queries: Sequence[str], *, progress: bool = False) -> np.ndarray:
        """Embed queries. This default is :meth:`embed` (symmetric models).

        Args:
            queries: The queries.
            progress: Show a progress bar over the queries.

        Returns:
            A ``(len(queries), dimension)`` float32 array, one row per query in input order.
        """
        return self.embed(queries, progress=progress, desc="embedding queries")

    def embed_query(self, query: str) -> np.ndarray:
        """Embed one query: from memory inside :meth:`cached_queries` when it was given there, else with
        :meth:`embed_queries`.

        Args:
            query: The query.

        Returns:
            A ``(dimension,)`` float32 vector.
        """
        cached = self._query_cache.get(query)
        return cached if cached is not None else self.embed_queries([query])[0]

    @contextmanager
    def cached_queries(self, queries: Sequence[str], *, progress: bool = False) -> Iterator[None]:
        """Embed ``queries`` now, batched, and let :meth:`embed_query` serve them from memory inside the block.

        Blocks nest; leaving one restores the cache as it was when the block was entered.

        Args:
            queries: The queries to embed up front (repeats are embedded once).
            progress: Show a progress bar over the queries.

        Returns:
            A context manager; nothing is bound by ``with ... as``.

        >>> emb = Embedder()
        >>> with emb.cached_queries(["aspirin", "stroke"]):
        ...     emb.embed_query("aspirin").shape
        (384,)
        """
        unique = list(dict.fromkeys(queries))
        vectors = self.embed_queries(unique, progress=progress) if unique else np.zeros((0, 0), dtype=np.float32)
        previous = self._query_cache
        self._query_cache = {**previous, **dict(zip(unique, vectors, strict=True))}
        try:
            yield
        finally:
            self._query_cache = previous


class Embedder(BaseEmbedder):
    """Unit-length sentence-transformers embeddings (so a dot product is the cosine similarity).

    The model loads on first use (:attr:`model`).

    Args:
        model: Hub id or local folder; default ``$TWOSTAGE_EMBEDDING_MODEL``, else all-MiniLM-L6-v2 (see
            :func:`~twostage_integrations.models.resolve_embedding_model`).
        batch_size: Texts per forward pass.
        device: torch device (``"cpu"``, ``"cuda"``...); default sentence-transformers' choice.

    >>> emb = Embedder()
    >>> emb.embed(["aspirin and stroke"]).shape
    (1, 384)
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        batch_size: int = 64,
        device: str | None = None,
    ) -> None:
        self.load_from, name = resolve_embedding_model(model)
        super().__init__(name, batch_size=batch_size)
        self.device = device

    @cached_property
    def model(self):
        """The sentence-transformers ``SentenceTransformer``, loaded on first access.

        Raises:
            ModelNotFoundError: ``model`` looks like a path and nothing is there.
            ModelLoadError: The model cannot be loaded (not cached and the hub unreachable, or not a model).
        """
        from sentence_transformers import SentenceTransformer

        return load_model(
            self.load_from,
            lambda name, local_only: SentenceTransformer(name, device=self.device, local_files_only=local_only),
            kind="embedding",
            env_var=EMBEDDING_MODEL_ENV,
        )

    @property
    def dimension(self) -> int:
        """Length of one vector (loads the model)."""
        getter = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        dim = getter()
        return int(dim) if dim is not None else int(self.embed(["x"]).shape[1])

    def embed(self, texts: Sequence[str], *, progress: bool = False, desc: str = "embedding") -> np.ndarray:
        """Embed documents in batches of :attr:`batch_size`.

        Args:
            texts: The passages.
            progress: Show a tqdm progress bar over the texts.
            desc: The progress bar's label.

        Returns:
            A ``(len(texts), dimension)`` float32 array of unit rows, in input order.
        """
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        chunks = []
        with tqdm(total=len(texts), desc=desc, unit="text", disable=not progress) as bar:
            for start in range(0, len(texts), self.batch_size):
                batch = texts[start : start + self.batch_size]
                chunks.append(
                    self.model.encode(
                        batch,
                        batch_size=self.batch_size,
                        normalize_embeddings=True,
                        convert_to_numpy=True,
                        show_progress_bar=False,
                    )
                )
                bar.update(len(batch))
        return np.vstack(chunks).astype(np.float32, copy=False)


class OnnxEmbedder(BaseEmbedder):
    """:class:`Embedder`'s vectors computed with ONNX Runtime: no torch or transformers import at inference.

    Vectors match :class:`Embedder`'s for the same model within float rounding and ``name`` is the same, so either
    backend queries a collection the other ingested. The model loads on first use; the first use ever exports its
    transformer to ONNX (needs torch; cached, see :mod:`twostage_integrations.rerank.onnx_export`). Models with
    modules other than Transformer, mean/CLS Pooling and Normalize need :class:`Embedder`.

    Args:
        model: Hub id or folder; ``None`` means ``TWOSTAGE_EMBEDDING_MODEL``, else all-MiniLM-L6-v2.
        batch_size: Texts per forward pass.
        threads: ONNX Runtime intra-op threads; default: physical cores.

    >>> emb = OnnxEmbedder()
    >>> emb.embed(["aspirin and stroke"]).shape
    (1, 384)
    """

    def __init__(
        self, model: str | os.PathLike[str] | None = None, *, batch_size: int = 64, threads: int | None = None
    ) -> None:
        self.load_from, name = resolve_embedding_model(model)
        super().__init__(name, batch_size=batch_size)
        self.threads = threads

    @cached_property
    def model(self) -> OnnxEncoder:
        """The ONNX Runtime engine (made on first use; a hub id is fetched as a snapshot)."""
        from .embeddings_onnx import HUB_EXTRA, OnnxEncoder
        from .rerank.onnx_export import snapshot

        return load_model(
            self.load_from,
            lambda name, local_only: OnnxEncoder(snapshot(name, local_only, extra=HUB_EXTRA), threads=self.threads),
            kind="embedding",
            env_var=EMBEDDING_MODEL_ENV,
        )

    @property
    def dimension(self) -> int:
        """Length of one vector."""
        return self.model.layout.dimension or int(self.embed(["x"]).shape[1])

    def embed(self, texts: Sequence[str], *, progress: bool = False, desc: str = "embedding") -> np.ndarray:
        """Embed ``texts`` in batches of similar length; ``progress=True`` shows a tqdm bar over texts."""
        return self.model.encode(texts, batch_size=self.batch_size, progress=progress, desc=desc)


def as_embedder(model: str | os.PathLike[str] | BaseEmbedder | None = None, backend: str | None = None) -> BaseEmbedder:
    """``model`` itself when it is already an embedder (shares the loaded model), else a new embedder for it.

    Args:
        model: An embedder, or a hub id or folder (None: ``TWOSTAGE_EMBEDDING_MODEL``, else all-MiniLM-L6-v2).
        backend: ``"onnx"`` (:class:`OnnxEmbedder`) or ``"torch"``
            (:class:`Embedder`); default ``TWOSTAGE_EMBEDDING_BACKEND``, else onnx when the ``onnx`` extra is
            installed and the model suits it, else torch. Same vectors and recorded name either way.

    Returns:
        The embedder.

    Raises:
        InvalidParameterError: An unknown backend.
        MissingDependencyError: ``backend="onnx"`` without onnxruntime and tokenizers.
    """
    if isinstance(model, BaseEmbedder):
        return model
    from .embeddings_onnx import resolve_embedding_backend

    return OnnxEmbedder(model) if resolve_embedding_backend(backend, model) == "onnx" else Embedder(model)
