"""``twostage finetune``: one option per :class:`~twostage_integrations.finetune.FinetuneConfig` field.

The options are built from the fields' metadata (help text, flag names, type), so a setting added to the
config is an option here without restating it; only the dataset argument and ``--json`` belong to the CLI.
"""

from __future__ import annotations

import inspect
import json
import logging
import shlex
import sys
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import MISSING, Field, fields
from pathlib import Path
from typing import Annotated, Any

import typer

from ..finetune.config import FinetuneConfig
from ..finetune.train import FinetuneResult
from .app import DbOpt, EmbeddingOpt, app, friendly_errors

# Fields whose option several commands share: the shared option's flag and help, the same everywhere.
_SHARED: dict[str, Any] = {"db": DbOpt, "embedding_model": EmbeddingOpt}
_DatasetArg = Annotated[
    Path, typer.Argument(help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv (label-free: corpus only).")
]
_JsonOpt = Annotated[Path | None, typer.Option("--json", help="Also write the result as JSON to this file.")]


def cli_fields() -> list[Field[Any]]:
    """The :class:`FinetuneConfig` fields ``twostage finetune`` has an option for, in the order of ``--help``."""
    return [f for f in fields(FinetuneConfig) if f.metadata["cli"]]


def _option(f: Field[Any], hints: dict[str, Any]) -> inspect.Parameter:
    meta = f.metadata
    if f.name in _SHARED:
        annotation = _SHARED[f.name]
    else:
        kind = meta["cli_type"] or hints[f.name]  # e.g. --layers takes "0,5", the field a list
        annotation = Annotated[kind, typer.Option(*meta["flags"], help=meta["help"])]
    default = inspect.Parameter.empty if f.default is MISSING else f.default
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def _signature() -> inspect.Signature:
    """What Typer reads to build the command: the dataset argument, the config's options, ``--json``, then
    the shared options."""
    hints = typing.get_type_hints(FinetuneConfig)
    options = [_option(f, hints) for f in cli_fields()]
    dataset = inspect.Parameter("dataset_dir", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=_DatasetArg)
    json_out = inspect.Parameter("json_out", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=_JsonOpt)
    own = [p for p in options if p.name not in _SHARED]
    shared = [p for p in options if p.name in _SHARED]
    return inspect.Signature([dataset, *own, json_out, *shared], return_annotation=None)


def config_from_options(options: dict[str, Any]) -> FinetuneConfig:
    """The config the option values describe (each turned into its field's value), with the command line.

    Raises:
        InvalidParameterError: A value the config refuses (shown as one ``error:`` line).
    """
    values = {}
    for f in cli_fields():
        convert = f.metadata["from_cli"]
        values[f.name] = convert(options[f.name]) if convert else options[f.name]
    return FinetuneConfig(**values, command=shlex.join(["twostage", *sys.argv[1:]]))


def _notice(message: str) -> None:
    typer.echo(f"\n{message}")  # after the progress bar's line


def finetune_command(dataset_dir: Path, json_out: Path | None = None, **options: Any) -> None:
    """Fine-tune the stage-2 cross-encoder on your data: mine hard negatives with stage 1, train with binary
    cross-entropy (sentence-transformers CrossEncoderTrainer), save a folder --rerank-model loads, and print
    nDCG@10 etc. on the held-back split before and after. Ctrl-C saves a checkpoint; --resume continues."""
    from ..finetune import finetune

    config = config_from_options(options)
    with _warnings_on_stderr():  # e.g. "skipping the before/after evaluation", said before training starts
        result = finetune(dataset_dir, config=config, on_interrupt=_notice)
    _report(result, dataset_dir, Path(config.out), json_out)


class _StderrWarnings(logging.Handler):
    """The finetune package's warnings as ``warning: ...`` lines on stderr while the command runs."""

    def emit(self, record: logging.LogRecord) -> None:
        typer.echo(f"warning: {record.getMessage()}", err=True)


@contextmanager
def _warnings_on_stderr() -> Iterator[None]:
    log, handler = logging.getLogger("twostage_integrations.finetune"), _StderrWarnings(logging.WARNING)
    log.addHandler(handler)
    try:
        yield
    finally:
        log.removeHandler(handler)


def _report(result: FinetuneResult, dataset_dir: Path, out: Path, json_out: Path | None) -> None:
    from rich.console import Console

    console = Console() if Console().is_terminal else Console(width=160)
    console.print(
        f"{result.n_pairs} pairs ({result.n_positive} positive) from {result.n_queries} queries; "
        f"{result.steps} steps in {result.train_seconds / 60:.1f} min"
    )
    if result.interrupted:
        console.print(f"interrupted: a usable model is in {out}; re-run the same command with --resume to continue")
        raise typer.Exit(130)
    if result.metrics.get("after"):
        console.print(result.table())
    if json_out:
        json_out.write_text(json.dumps(result.to_dict(), indent=2))
    console.print(f"model written to {out} (model card: {out / 'README.md'})")
    if not result.metrics.get("after"):
        console.print(f"evaluate it with: twostage eval {dataset_dir} --rerank-model {out}")


finetune_command.__signature__ = _signature()  # type: ignore[attr-defined]
app.command("finetune")(friendly_errors(finetune_command))
