"""Stage 1 over a Chroma collection, with sentence-transformers embeddings computed here."""

from __future__ import annotations

import errno
import logging
import os
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from ..config import TWOSTAGE_DB, XDG_DATA_HOME
from ..embeddings import BaseEmbedder, as_embedder
from ..errors import (
    ChromaUnavailableError,
    CollectionNotFoundError,
    DatabaseNotFoundError,
    InvalidParameterError,
    StorageError,
    TwoStageError,
)
from ..hit import Hit
from ..validation import check_positive_int, check_search_args
from .base import BaseRecall
from .chroma_write import VERSION_KEY, ChromaWriteMixin

log = logging.getLogger(__name__)

DB_ENV = TWOSTAGE_DB.name
DB_FILE = "chroma.sqlite3"  # what makes a folder an embedded Chroma database
MODEL_KEY = "twostage:embedding_model"
DIM_KEY = "twostage:dimension"

FILTER_HELP = (
    'a valid filter looks like {"source": "a.md"}, {"passage": {"$gte": 2}}, {"source": {"$in": ["a.md", "b.md"]}} '
    'or {"$and": [{"source": "a.md"}, {"passage": {"$lt": 5}}]}; $gt/$gte/$lt/$lte need numbers'
)


def default_db_path() -> Path:
    """``$TWOSTAGE_DB``, else ``$XDG_DATA_HOME/twostage/chroma`` (``~/.local/share/twostage/chroma``)."""
    db = TWOSTAGE_DB.value()
    if db:
        return Path(db).expanduser()
    base = XDG_DATA_HOME.value() or Path.home() / ".local" / "share"
    return Path(base) / "twostage" / "chroma"


def make_client(
    *,
    path: str | os.PathLike[str] | None = None,
    host: str | None = None,
    port: int | None = None,
    create: bool = True,
):
    """A Chroma client: an embedded ``PersistentClient`` by default, an ``HttpClient`` when ``host`` or ``port``
    is given.

    Args:
        path: Folder of the embedded database (default :func:`default_db_path`).
        host: Chroma server host (default localhost when only ``port`` is given).
        port: Chroma server port (default 8000 when only ``host`` is given).
        create: For an embedded database, make the folder and the database when they are not there yet (what a
            write needs). ``False`` only opens an existing database: a read must not leave one behind.

    Returns:
        The client.

    Raises:
        InvalidParameterError: Both ``path`` and ``host``/``port`` were given.
        ChromaUnavailableError: The server could not be reached.
        DatabaseNotFoundError: ``create=False`` and there is no database at ``path`` (nothing was created).
        StorageError: The folder could not be used (not writable, under a file, corrupted database).
    """
    import chromadb

    if host is not None or port is not None:
        if path is not None:
            raise InvalidParameterError("pass either path (embedded Chroma) or host/port (Chroma server), not both")
        where = f"{host or 'localhost'}:{int(port or 8000)}"
        with chroma_errors(where, server=True):
            try:
                return chromadb.HttpClient(host=host or "localhost", port=int(port or 8000))
            except ValueError as exc:  # chromadb's own "Could not connect to a Chroma server"
                raise _unavailable(where, exc) from None
    db = Path(path).expanduser() if path is not None else default_db_path()
    with chroma_errors(str(db), server=False):
        if create:
            db.mkdir(parents=True, exist_ok=True)
        else:
            require_database(db)
        return chromadb.PersistentClient(path=str(db))


def database_exists(db: str | os.PathLike[str]) -> bool:
    """Whether the folder ``db`` holds an embedded Chroma database (its ``chroma.sqlite3``); reads nothing else."""
    return (Path(db) / DB_FILE).is_file()


def require_database(db: Path, collection: str | None = None) -> None:
    """Nothing when ``db`` holds a database; otherwise raise, before anything is created.

    Raises:
        NotADirectoryError: A part of ``db`` is a file, so no database can be there (:func:`chroma_errors` makes it
            the :class:`StorageError` a write to the same path would give).
        DatabaseNotFoundError: There is no database at ``db`` (naming the folder and the command that makes one).
    """
    if database_exists(db):
        return
    probe = db
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(probe))
    name = collection or "NAME"
    what = f"so collection {collection!r} does not exist there" if collection else "so there is nothing to read"
    raise DatabaseNotFoundError(
        f"no Chroma database at {db} ({what}); create it with `twostage ingest PATH -c {name} --db {db}` "
        f"(or add_texts), or point --db / TWOSTAGE_DB at the folder you ingested into"
    )


def _unavailable(where: str, exc: BaseException) -> ChromaUnavailableError:
    return ChromaUnavailableError(
        f"cannot reach the Chroma server at {where} ({type(exc).__name__}: {exc}); check that it is running "
        f"(`chroma run --path DB --port PORT`) and try again"
    )


@contextmanager
def chroma_errors(where: str, *, server: bool) -> Iterator[None]:
    """Turn Chroma's transport and storage failures into our typed errors naming ``where`` (host:port or path)."""
    import httpx
    from chromadb.errors import InternalError

    try:
        yield
    except TwoStageError:
        raise  # already ours (raised inside the block)
    except httpx.TransportError as exc:  # refused, reset, or the server died mid-request
        raise _unavailable(where, exc) from exc
    except ConnectionError as exc:
        if server:
            raise _unavailable(where, exc) from exc
        raise
    except InternalError as exc:
        raise StorageError(
            f"Chroma could not use the database at {where} ({exc}); check that the folder is writable and is a "
            f"Chroma database (not corrupted), or point --db / TWOSTAGE_DB elsewhere"
        ) from exc
    except OSError as exc:
        raise StorageError(
            f"cannot use the Chroma folder {where} ({exc.strerror or exc}); pass a writable folder with --db "
            f"or TWOSTAGE_DB"
        ) from exc


def _location_of(client: Any) -> tuple[str, bool]:
    """(``host:port``, True) for a Chroma server client, (database folder, False) for an embedded one."""
    try:
        settings = client.get_settings()
    except Exception:  # noqa: BLE001 - a client without settings only loses detail in error messages
        return "Chroma", False
    if settings.chroma_server_host and "fastapi" in str(settings.chroma_api_impl).lower():
        return f"{settings.chroma_server_host}:{settings.chroma_server_http_port}", True
    if settings.is_persistent:
        return str(settings.persist_directory), False
    return "in-memory Chroma", False


def check_filters(where: Mapping[str, Any] | None, where_document: Mapping[str, Any] | None) -> None:
    """Chroma's own filter validation, up front, as :class:`InvalidParameterError` saying what a valid one is."""
    from chromadb.api.types import validate_where, validate_where_document

    for label, value, check in (
        ("where", where, validate_where),
        ("where_document", where_document, validate_where_document),
    ):
        if value is None or (isinstance(value, Mapping) and not value):
            continue  # no filter
        if not isinstance(value, Mapping):
            raise InvalidParameterError(f"{label} filter must be a JSON object/dict, got {value!r}; {FILTER_HELP}")
        try:
            check(dict(value))  # type: ignore[arg-type]  # Chroma's validators take plain dicts
        except (ValueError, TypeError) as exc:
            reason = str(exc).removesuffix(" in query.").removesuffix(".")
            raise InvalidParameterError(f"invalid {label} filter {dict(value)!r}: {reason}; {FILTER_HELP}") from None


def _cosine_from_distance(space: str):
    # Embeddings are unit length, so every Chroma space maps back to cosine similarity.
    if space == "l2":  # Chroma reports squared L2: |a-b|^2 = 2 - 2cos
        return lambda d: 1.0 - d / 2.0
    return lambda d: 1.0 - d  # "cosine" and "ip" both report 1 - dot


class ChromaRecall(ChromaWriteMixin, BaseRecall):
    """Dense recall from a Chroma collection.

    Where the collection lives, first match wins: ``collection`` is already a Chroma ``Collection``; a
    ``client`` you made; ``host``/``port`` of a running Chroma server; else an embedded database at
    ``path``. New collections use cosine space; ``recall_score`` is the cosine similarity of query and passage
    (higher = better).

    An embedded database is only created by the first write (:meth:`add_texts`): searching a folder that holds
    no database raises :class:`~twostage_integrations.errors.DatabaseNotFoundError` naming the folder and leaves
    nothing behind. Every method that reaches Chroma raises :class:`ChromaUnavailableError` when the server cannot
    be reached and :class:`StorageError` when the embedded database cannot be used; they are not repeated below.

    Args:
        collection: A collection name, or a Chroma ``Collection``.
        path: Folder of the embedded database (default :func:`default_db_path`).
        host: Chroma server host (default localhost when only ``port`` is given).
        port: Chroma server port (default 8000 when only ``host`` is given).
        client: A Chroma client you made; ``path``, ``host`` and ``port`` are then ignored.
        embedding_model: Hub id, folder or :class:`~twostage_integrations.embeddings.BaseEmbedder` (default
            all-MiniLM-L6-v2). Use the model that wrote the collection: it is recorded there; a mismatch warns.
        batch_size: Passages per Chroma write in :meth:`add_texts` (at least 256 are sent at once).
        show_progress: A progress bar over the passages in :meth:`add_texts` (off: a library call prints nothing).
        progress: Former name of ``show_progress``; wins when given.

    Raises:
        InvalidParameterError: An invalid collection name, or ``path`` together with ``host``/``port``.

    >>> recall = ChromaRecall("docs", path="/tmp/twostage-doctest")
    >>> recall.add_texts(["Aspirin lowers the risk of stroke.", "Paris is the capital of France."]).added
    2
    >>> recall.search("what is France's capital?", limit=1)[0].text
    'Paris is the capital of France.'
    """

    score_kind: str = "cosine"  # recall_score scale, see docs/scores.md

    def __init__(
        self,
        collection: str | Any,
        *,
        path: str | os.PathLike[str] | None = None,
        host: str | None = None,
        port: int | None = None,
        client: Any = None,
        embedding_model: str | os.PathLike[str] | BaseEmbedder | None = None,
        batch_size: int = 64,
        show_progress: bool = False,
        progress: bool | None = None,
    ) -> None:
        self.embedder = as_embedder(embedding_model)
        self.batch_size = batch_size
        self.show_progress = show_progress if progress is None else progress
        self._writes = 0  # writes through this object; derived indexes compare it to skip a round trip
        self._embedded = 0  # passages embedded for writes (see ChromaWriteMixin.embedded)
        self._write_lock = threading.Lock()
        self._open_lock = threading.Lock()
        self._client: Any = client
        # The embedded database folder when we open it ourselves; None for a server or a client/collection given.
        self.path: Path | None = None
        if isinstance(collection, str):
            check_collection_name(collection)
            self.name = collection
            self._collection = None
            if client is None and host is None and port is None:
                self.path = Path(path).expanduser() if path is not None else default_db_path()
                if database_exists(self.path):
                    self._client = make_client(path=self.path)  # as before: a bad database is reported at once
            elif client is None:
                self._client = make_client(path=path, host=host, port=port)
        else:  # an existing chromadb Collection
            self.name = collection.name
            self._collection = collection
        # Where the data lives, for error messages: host:port of a server, else the database folder.
        if self._client is None and self.path is not None:
            self.location, self._server = str(self.path), False
        else:
            api = self._client if self._client is not None else getattr(collection, "_client", None)
            self.location, self._server = _location_of(api)

    @property
    def progress(self) -> bool:
        """Former name of :attr:`show_progress`."""
        return self.show_progress

    @progress.setter
    def progress(self, value: bool) -> None:
        self.show_progress = value

    @property
    def client(self) -> Any:
        """The Chroma client (``None`` for a bare ``Collection`` given without one). For an embedded database
        that does not exist yet, asking for the client creates it (folder and database), as a write would."""
        return self._open_client(create=True)

    def _open_client(self, *, create: bool) -> Any:
        """The client, opening the embedded database on first need: ``create`` for writes; a read of a folder
        without a database raises :class:`DatabaseNotFoundError` and creates nothing."""
        if self._client is not None or self.path is None:
            return self._client
        with self._open_lock:
            if self._client is None:
                with self.errors():
                    if not create:
                        require_database(self.path, self.name)
                    self._client = make_client(path=self.path)
        return self._client

    # -- collection handling -------------------------------------------------------------------------
    def errors(self) -> AbstractContextManager[None]:
        """A context manager turning Chroma's transport and storage failures inside it into the typed errors
        (:class:`ChromaUnavailableError`, :class:`StorageError`) naming where the data lives; for code that calls
        the Chroma collection directly (e.g. :class:`BM25Recall`)."""
        return chroma_errors(self.location, server=self._server)

    @property
    def writes(self) -> int:
        """How many writes (adds, updates, deletes that changed something) went through this object so far; a
        derived index compares it with the count it last saw to know a version check is due without asking Chroma."""
        return self._writes

    def _get_collection(self, *, create: bool):
        if self._collection is not None:
            return self._collection
        with self.errors():
            return self._open_collection(create=create)

    def _open_collection(self, *, create: bool):
        client = self._open_client(create=create)
        if create:
            self._collection = client.get_or_create_collection(
                self.name,
                embedding_function=None,
                configuration={"hnsw": {"space": "cosine"}},
                metadata={MODEL_KEY: self.embedder.name, DIM_KEY: self.embedder.dimension},
            )
        else:
            from chromadb.errors import NotFoundError

            try:
                self._collection = client.get_collection(self.name, embedding_function=None)
            except NotFoundError as exc:
                raise CollectionNotFoundError(
                    f"collection {self.name!r} does not exist in {self._where()}; create it with "
                    f"`{self._ingest_command()}` (or add_texts) first"
                ) from exc
        self._check_embedder(self._collection)
        return self._collection

    def _where(self) -> str:
        if self._server:
            return f"the Chroma server at {self.location}"
        return f"the Chroma database at {self.location}" if self.path is not None else self.location

    def _ingest_command(self) -> str:
        command = f"twostage ingest PATH -c {self.name}"
        if self._server:
            host, _, port = self.location.rpartition(":")
            return f"{command} --host {host} --port {port}"
        return f"{command} --db {self.location}" if self.path is not None else command

    @property
    def collection(self):
        """The Chroma ``Collection``.

        Raises:
            CollectionNotFoundError: The collection (or the database) does not exist; nothing is created.
        """
        return self._get_collection(create=False)

    def _check_embedder(self, collection) -> None:
        meta = collection.metadata or {}
        recorded = meta.get(MODEL_KEY)
        if recorded and recorded != self.embedder.name:
            log.warning(
                "collection %r was written with embedding model %r but is queried with %r; "
                "results are only meaningful with the same model",
                self.name,
                recorded,
                self.embedder.name,
            )

    def _space(self, collection) -> str:
        config = getattr(collection, "configuration", None) or {}
        hnsw = config.get("hnsw") or {}
        return hnsw.get("space") or (collection.metadata or {}).get("hnsw:space") or "l2"

    def count(self) -> int:
        """How many passages the collection holds.

        Raises:
            CollectionNotFoundError: The collection (or the database) does not exist.
        """
        with self.errors():
            return self.collection.count()

    def version(self) -> tuple[int, str]:
        """``(count, stamp)`` read fresh from Chroma (two small calls): what a derived index compares to see
        whether the collection changed. The stamp changes on every write through :meth:`add_texts` /
        :meth:`delete` (in any process); the count also catches adds and deletes by other writers.

        Raises:
            CollectionNotFoundError: The collection (or the database) does not exist.
        """
        with self.errors():
            return self.collection.count(), str(self._fresh_metadata().get(VERSION_KEY, ""))

    def _fresh_metadata(self) -> dict[str, Any]:
        # Collection.metadata is a snapshot taken when the handle was made; another process may have written since.
        collection = self.collection
        if self._client is not None:
            return dict(self._client.get_collection(self.name, embedding_function=None).metadata or {})
        model = collection._client.get_collection(  # a bare Collection handle: ask its server API directly
            name=collection.name, tenant=collection.tenant, database=collection.database
        )
        return dict(model.metadata or {})

    # -- writing (add_texts: see ChromaWriteMixin) ------------------------------------------------------
    def delete(self, ids: Sequence[str]) -> int:
        """Delete passages by id. Through this method (or :meth:`BM25Recall.delete` / :meth:`HybridRecall.delete`)
        the version stamp changes, so BM25 indexes over the collection drop the passages too.

        Args:
            ids: The ids to delete; ids not stored are ignored.

        Returns:
            How many of ``ids`` were stored.

        Raises:
            InvalidParameterError: ``ids`` is a string or holds a non-string.
            CollectionNotFoundError: The collection (or the database) does not exist.
        """
        if isinstance(ids, str) or not all(isinstance(i, str) for i in ids):
            raise InvalidParameterError(f"ids must be a list of strings, got {ids!r}")
        ids = list(dict.fromkeys(ids))
        if not ids:
            return 0
        with self.errors():
            collection = self.collection
            stored = collection.get(ids=ids, include=[])["ids"]
            if stored:
                collection.delete(ids=stored)
                self._bump_version(collection, "delete", stored)
        return len(stored)

    # -- reading ---------------------------------------------------------------------------------------
    def search(
        self,
        query: str,
        limit: int = 20,
        *,
        where: Mapping[str, Any] | None = None,
        where_document: Mapping[str, Any] | None = None,
        num_candidates: int | None = None,
    ) -> list[Hit]:
        """The top ``limit`` passages for ``query`` by cosine similarity, best first.

        Args:
            query: The search text.
            limit: How many hits at most.
            where: Chroma metadata filter, e.g. ``{"source": "a.md"}``.
            where_document: Chroma document filter, e.g. ``{"$contains": "aspirin"}``.
            num_candidates: HNSW search depth for this call (default ``limit``). Chroma has no per-query
                ``ef_search``, but HNSW explores at least as many nodes as results asked for, so this asks for
                ``max(limit, num_candidates)`` and keeps the best ``limit``; nothing is written.

        Returns:
            Hits with ``score`` = ``recall_score`` (cosine similarity) and ``recall_rank`` set (1-based).

        Raises:
            InvalidQueryError: The query is empty, blank or not a string.
            InvalidParameterError: ``limit`` or ``num_candidates`` below 1, or a malformed filter (the message
                shows a valid one).
            CollectionNotFoundError: The collection (or the database) does not exist; nothing is created.
            ModelLoadError: The embedding model could not be loaded.
        """
        check_search_args(query, limit)
        if num_candidates is not None:
            check_positive_int(num_candidates, "num_candidates")
        check_filters(where, where_document)
        with self.errors():
            collection = self.collection
            vector = self.embedder.embed_query(query)
            res = collection.query(
                query_embeddings=[vector],
                n_results=max(limit, num_candidates or 0),
                where=dict(where) if where else None,
                where_document=dict(where_document) if where_document else None,
                include=["documents", "metadatas", "distances"],
            )
        to_cosine = _cosine_from_distance(self._space(collection))
        rows = zip(res["ids"][0], res["documents"][0], res["metadatas"][0], res["distances"][0], strict=True)
        return [
            self._hit(doc_id, text, meta, to_cosine(dist), rank)
            for rank, (doc_id, text, meta, dist) in enumerate(list(rows)[:limit], start=1)
        ]

    def __repr__(self) -> str:
        return f"ChromaRecall(collection={self.name!r}, embedding_model={self.embedder.name!r})"

    def get_or_create_collection(self):
        """The Chroma ``Collection``, created (cosine space, embedding model recorded) if it does not exist yet."""
        return self._get_collection(create=True)


def check_collection_name(name: str) -> str:
    """Chroma's naming rule, checked up front so the error says what to do."""

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{1,510}[A-Za-z0-9]", name):
        raise InvalidParameterError(
            f"collection name {name!r} is not valid: use 3-512 characters from letters, digits, '.', '_' "
            f"and '-', starting and ending with a letter or digit"
        )
    return name
