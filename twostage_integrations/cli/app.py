"""The ``twostage`` Typer app and the options every subcommand shares."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from ..errors import TwoStageError

app = typer.Typer(
    name="twostage",
    help="Two-stage retrieval: recall candidates from Chroma, rerank them with a cross-encoder.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

F = TypeVar("F", bound=Callable[..., Any])

# Options shared by the commands that talk to Chroma.
CollectionOpt = Annotated[str, typer.Option("--collection", "-c", help="Chroma collection name.")]
DbOpt = Annotated[
    Path | None,
    typer.Option("--db", help="Embedded Chroma folder (default: $TWOSTAGE_DB or ~/.local/share/twostage/chroma)."),
]
HostOpt = Annotated[str | None, typer.Option("--host", help="Chroma server host (instead of --db).")]
PortOpt = Annotated[int | None, typer.Option("--port", help="Chroma server port (instead of --db).")]
EmbeddingOpt = Annotated[
    str | None,
    typer.Option(
        "--embedding-model",
        help="Embedding model id or folder (default: $TWOSTAGE_EMBEDDING_MODEL or all-MiniLM-L6-v2).",
    ),
]
RerankModelOpt = Annotated[
    str | None,
    typer.Option(
        "--rerank-model",
        help="Reranker: cross-encoder folder or hub id, or a Cohere model such as rerank-v3.5 "
        "(default: $TWOSTAGE_RERANK_MODEL or ms-marco-MiniLM-L-6-v2).",
    ),
]
RerankBackendOpt = Annotated[
    str | None,
    typer.Option(
        "--rerank-backend",
        help="Cross-encoder engine: onnx (ONNX Runtime fp32: torch's scores, faster on CPU), onnx-int8 (faster "
        "again, rankings close to fp32) or torch (default: $TWOSTAGE_RERANK_BACKEND, else onnx when the onnx extra "
        "is installed, else torch).",
        show_default=False,
    ),
]


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one ``error:`` line to stderr and return the Exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def friendly_errors(func: F) -> F:
    """Our typed errors become one line on stderr and exit code 2, never a traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except TwoStageError as exc:
            raise fail(str(exc)) from None
        except KeyboardInterrupt:
            typer.echo("interrupted; re-run the same command to finish (nothing is stored twice)", err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def make_recall(
    collection: str,
    db: Path | None,
    host: str | None,
    port: int | None,
    embedding_model: str | None,
    kind: str = "dense",
):
    """``kind``: dense (Chroma), bm25 or hybrid (RRF of both) over the same collection."""
    from ..recall.chroma import ChromaRecall

    if db is not None and (host or port):
        raise fail("pass either --db (embedded Chroma) or --host/--port (Chroma server), not both")
    chroma = ChromaRecall(collection, path=db, host=host, port=port, embedding_model=embedding_model)
    if kind == "dense":
        return chroma
    from ..recall.hybrid import recall_by_kind

    return recall_by_kind(kind, chroma)
