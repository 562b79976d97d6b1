"""``twostage serve``."""

from __future__ import annotations

from typing import Annotated

import typer

from .app import RerankBackendOpt, app, fail, friendly_errors


@app.command()
@friendly_errors
def serve(
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="Cross-encoder folder or hub id (default: $TWOSTAGE_RERANK_MODEL, else ms-marco-MiniLM-L-6-v2).",
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to bind; the default keeps the server on this machine.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="TCP port.")] = 8080,
    rerank_backend: RerankBackendOpt = None,
    max_batch: Annotated[int, typer.Option(help="(query, document) pairs per forward pass.")] = 32,
    max_documents: Annotated[int, typer.Option(help="Most documents accepted in one request.")] = 1000,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="TWOSTAGE_SERVE_API_KEY",
            help="Require 'Authorization: Bearer KEY' (clients pass it as their Cohere API key).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve a local cross-encoder behind Cohere's rerank API: POST /v2/rerank, GET /health.

    Any Cohere client works against it, e.g. cohere.ClientV2(api_key=..., base_url="http://127.0.0.1:8080").
    """
    import uvicorn

    from ..models import resolve_rerank_model
    from ..rerank.cohere import is_cohere_model
    from ..rerank.cross_encoder import CrossEncoderReranker
    from ..server import create_app

    name = resolve_rerank_model(model)
    if is_cohere_model(name):
        raise fail(f"{name!r} is a Cohere model; serve hosts a local cross-encoder: pass --model FOLDER_OR_HUB_ID")
    reranker = CrossEncoderReranker(name, batch_size=max_batch, backend=rerank_backend)
    server_app = create_app(reranker, api_key=api_key, max_documents=max_documents)
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        typer.echo(f"warning: listening on {host} without --api-key: anyone who can reach it can use it", err=True)
    typer.echo(
        f"serving {reranker.name} ({reranker.backend}) at http://{host}:{port}/v2/rerank "
        f"(auth {'on' if api_key else 'off'}); Ctrl+C stops",
        err=True,
    )
    uvicorn.run(server_app, host=host, port=port, log_level="warning")
