"""The ``twostage`` Typer app and the options every subcommand shares."""

from __future__ import annotations

import inspect
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from typer import _click as click
from typer._click.globals import get_current_context
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from ..config import (
    TWOSTAGE_DB,
    TWOSTAGE_DEBUG,
    TWOSTAGE_EMBEDDING_MODEL,
    TWOSTAGE_RERANK_BACKEND,
    TWOSTAGE_RERANK_MODEL,
)
from ..errors import TwoStageError
from ..models import quiet_model_libraries
from ..recall.factory import DEFAULT_RECALL
from ..spec.presets import PRESETS

if TYPE_CHECKING:
    from ..spec import PipelineSpec


def _reflow(text: str) -> str:
    # Docstrings wrap at 120 columns; rich keeps those line breaks, cutting sentences in the help. Rejoin lines.
    return "\n\n".join(" ".join(p.split()) for p in inspect.cleandoc(text).split("\n\n"))


# Click's names for value types: Typer (0.29) labels values <str>, <int>, <path>; click, and Typer before it,
# say TEXT, INTEGER, PATH.
_CLICK_TYPE_NAMES = {"str": "TEXT", "int": "INTEGER", "float": "FLOAT", "bool": "BOOLEAN"}


def _value_label(param: TyperOption, ctx: click.Context) -> str:
    """Click's label for an option's value: TEXT, INTEGER, FLOAT, PATH..., ``[a|b]`` for a choice.

    >>> from typer.main import get_command
    >>> cmd = get_command(app)
    >>> _value_label(next(p for p in cmd.params if p.name == "debug"), click.Context(cmd))
    'BOOLEAN'
    """
    label = param.display_type(ctx).strip("<>")  # Typer's own: "int", "list[str]", "path", "a|b", "int range"
    if param.type_descriptor.is_choice:
        return f"[{label}]"
    item = re.fullmatch(r"list\[(.+)\]", label)
    if item:  # a repeatable option takes one value each time
        label = item.group(1)
    return " ".join(_CLICK_TYPE_NAMES.get(word.lower(), word.upper()) for word in label.split())


class _Argument(TyperArgument):
    """A positional argument whose help row is its name alone (TEXT, PATHS): Typer would add a ``<str>`` column."""

    def display_type_rich(self, ctx: click.Context) -> str | None:
        return None


class _HelpStyle:
    """Help output as people expect it: ``twostage query [OPTIONS] TEXT``, values labelled as click does
    (``--limit INTEGER``, not ``<int>``), flags without a label, docstrings reflowed to the terminal width."""

    help: str | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.help:
            self.help = _reflow(self.help)

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        params = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if isinstance(param, TyperArgument):
                if param.metavar is None and param.name:
                    param.metavar = param.name.upper()
                param.__class__ = _Argument  # Typer builds the parameters itself, with no hook for their class
            elif isinstance(param, TyperOption) and param.metavar is None:
                # A flag takes no value (Typer would label it <bool>); other options get click's TEXT, INTEGER...
                param.metavar = "" if param.is_flag else _value_label(param, ctx)
        return params


class _Command(_HelpStyle, TyperCommand):
    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):  # TEXT, PATHS...: click's style, not Typer's {text}
                name = (param.metavar or (param.name or "").upper()) + ("..." if param.nargs != 1 else "")
                pieces.append(name if param.required else f"[{name}]")
            else:
                pieces.extend(param.get_usage_pieces(ctx))
        return pieces


class _Group(_HelpStyle, TyperGroup):
    pass


class _Typer(typer.Typer):
    """``typer.Typer`` whose commands use :class:`_Command` unless told otherwise."""

    def command(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("cls", _Command)
        return super().command(*args, **kwargs)


app = _Typer(
    name="twostage",
    cls=_Group,
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
    typer.Option("--db", help=f"Embedded Chroma folder (default: {TWOSTAGE_DB.or_default()})."),
]
HostOpt = Annotated[str | None, typer.Option("--host", help="Chroma server host (instead of --db).")]
PortOpt = Annotated[int | None, typer.Option("--port", help="Chroma server port (instead of --db).")]
EmbeddingOpt = Annotated[
    str | None,
    typer.Option(
        "--embedding-model",
        help=f"Embedding model id or folder (default: {TWOSTAGE_EMBEDDING_MODEL.or_default()}).",
    ),
]
RecallOpt = Annotated[
    str,
    typer.Option(
        "--recall",
        help="Stage 1: hybrid (reciprocal rank fusion of dense embeddings and BM25 keywords), dense (embeddings "
        "only) or bm25 (keywords only).",
    ),
]
RerankModelOpt = Annotated[
    str | None,
    typer.Option(
        "--rerank-model",
        help="Reranker: cross-encoder folder or hub id, a Cohere model such as rerank-v3.5 (or cohere:NAME), "
        "a Voyage model such as rerank-2.5 (or voyage:NAME), or any rerankers-library model as "
        "rerankers:MODEL[:TYPE] (e.g. rerankers:/path/to/model:cross-encoder; see docs/stage2.md) "
        f"(default: {TWOSTAGE_RERANK_MODEL.or_default()}).",
    ),
]
RerankMaxLengthOpt = Annotated[
    int | None,
    typer.Option(
        "--rerank-max-length",
        help="Token limit per (query, passage) pair for the cross-encoder; longer pairs are cut and their ends are "
        "not scored (default: the model's own limit).",
        show_default=False,
    ),
]
LongDocsOpt = Annotated[
    str | None,
    typer.Option(
        "--long-docs",
        help="Cross-encoder scoring of passages longer than --rerank-max-length: first (cut them, the default), "
        "max (score every window, keep the best) or top2mean (mean of the best two); with windows each hit "
        "carries its best window as evidence (docs/stage2.md).",
        show_default=False,
    ),
]
RerankBackendOpt = Annotated[
    str | None,
    typer.Option(
        "--rerank-backend",
        help="Cross-encoder engine: auto (the faster of onnx and torch on this machine, timed once per model and "
        "cached; see twostage doctor), onnx (ONNX Runtime fp32: torch's scores), onnx-int8 (faster, rankings close "
        f"to fp32; never picked by auto) or torch (default: {TWOSTAGE_RERANK_BACKEND.or_default()}).",
        show_default=False,
    ),
]


SPEC_RULE = (
    "A spec or preset is the whole pipeline: the options that describe one (--recall, --limit, --top-k, "
    "--rerank-model or serve's --model, --rerank-backend, --no-rerank, --stage, --fusion-*...) are refused with it; "
    "write them in the spec instead (docs/pipeline_spec.md)."
)
PipelineOpt = Annotated[
    str | None,
    typer.Option(
        "--pipeline",
        help="The whole pipeline as one spec, RECALL > STAGE > ... [> fuse=METHOD:WEIGHT] [> top_k=N], e.g. "
        "'hybrid:100 > default:30@backend=onnx-int8 > default > top_k=5', or a .toml file holding one. " + SPEC_RULE,
        show_default=False,
    ),
]
PresetOpt = Annotated[
    str | None,
    typer.Option(
        "--preset",
        help=f"A named pipeline spec ({', '.join(f'{k}: {v}' for k, v in PRESETS.items())}); instead of --pipeline.",
        show_default=False,
    ),
]
# The options a spec replaces (Python parameter names, any command): given together with --pipeline/--preset
# they are refused, naming both flags.
PIPELINE_PARAMS = (
    "recall",
    "recall_kind",
    "limit",
    "limits",
    "top_k",
    "rerank_model",
    "model",
    "rerank_backend",
    "rerank_max_length",
    "long_docs",
    "no_rerank",
    "stage",
    "fusion_weight",
    "fusion_method",
    "rrf_k",
    "per_arm",
)
FusionWeightOpt = Annotated[
    str | None,
    typer.Option(
        "--fusion-weight",
        help="Fuse the last reranker's order with its input order: 1 = reranker only, 0 = input only; auto = "
        "chosen without labels on pseudo-queries from the corpus (first sentence -> rest of its passage; the "
        "estimate table is printed and in --json).",
        metavar="FLOAT|auto",
    ),
]
FusionMethodOpt = Annotated[str, typer.Option("--fusion-method", help="Fusion: rrf (of ranks) or minmax (of scores).")]


def given_options(names: Sequence[str] = PIPELINE_PARAMS) -> list[str]:
    """The flags among ``names`` the user typed (or set through their environment variable) in the running
    command, as typed (``--top-k``); empty outside a command."""
    ctx = get_current_context(silent=True)
    if ctx is None:
        return []
    flags = command_flags()
    defaults = (click.core.ParameterSource.DEFAULT, click.core.ParameterSource.DEFAULT_MAP, None)
    return [flags[name] for name in names if name in flags and ctx.get_parameter_source(name) not in defaults]


def pipeline_spec(
    pipeline: str | None,
    preset: str | None,
    *,
    recall: str = DEFAULT_RECALL,
    limit: int = 20,
    top_k: int = 5,
    rerank_model: str | None = None,
    rerank_backend: str | None = None,
    rerank_max_length: int | None = None,
    long_docs: str | None = None,
    no_rerank: bool = False,
    stages: Sequence[str] | None = None,
    fusion: tuple[str, float | str] | None = None,
    rrf_k: float | None = None,
    per_arm: int | None = None,
    allow: Sequence[str] = (),
) -> PipelineSpec:
    """The pipeline a command runs, as one spec: ``--pipeline``/``--preset`` when given (the options that
    describe a pipeline are then refused, naming both flags), else the command's own options read as a spec.

    Args:
        pipeline: ``--pipeline``: a spec string or a ``.toml`` file (a preset name works too).
        preset: ``--preset``: a preset name.
        recall: ``--recall``: hybrid (the default), dense or bm25.
        limit: ``--limit``: candidates recalled.
        top_k: ``--top-k``: hits kept.
        rerank_model: ``--rerank-model`` (None: the default).
        rerank_backend: ``--rerank-backend``: the engine of stages that name none.
        rerank_max_length: ``--rerank-max-length``: the token limit of stages that name none.
        long_docs: ``--long-docs``: how stages that name none score long passages (first, max, top2mean).
        no_rerank: ``--no-rerank``: no stage 2.
        stages: ``--stage`` tokens (instead of ``rerank_model``).
        fusion: ``(--fusion-method, --fusion-weight)`` for the last stage (the weight may be ``"auto"``), or None.
        rrf_k: ``--rrf-k`` (hybrid).
        per_arm: ``--per-arm`` (hybrid).
        allow: Options (Python names) the command accepts beside a spec (bench's ``limits``).

    Returns:
        The spec.

    Raises:
        typer.Exit: Both --pipeline and --preset, or one of them with a pipeline option (exit 2, one line).
        PipelineSpecError: A token that cannot be read.
        InvalidParameterError: ``limit``/``top_k`` out of range.
    """
    from ..spec import FusionSpec, PipelineSpec, RecallSpec, StageSpec, default_stages, spec_from
    from ..validation import check_limit_top_k

    if pipeline is not None and preset is not None:
        raise fail("--pipeline and --preset both name the pipeline; pass one")
    if pipeline is not None or preset is not None:
        given = given_options(tuple(p for p in PIPELINE_PARAMS if p not in allow))
        if given:
            flag = "--pipeline" if pipeline is not None else "--preset"
            raise fail(f"{given[0]} and {flag} both set the pipeline; pass one (write it in the spec instead)")
        spec = spec_from(pipeline, preset)
        assert spec is not None  # one of them was given
        return spec
    check_limit_top_k(limit, top_k)  # the options' own messages (--top-k must be <= --limit...)
    check_long_docs_flag(long_docs)
    hybrid: dict[str, Any] = {"rrf_k": rrf_k, "per_arm": per_arm} if recall == "hybrid" else {}
    engine = {"backend": rerank_backend, "max_length": rerank_max_length, "long_docs": long_docs}
    steps: tuple[StageSpec, ...]
    if no_rerank:
        steps = ()
    elif stages or rerank_model is not None or rerank_backend is not None or rerank_max_length is not None:
        parsed: list[tuple[str | None, int | None, dict[str, Any]]] = (
            [parse_stage(s) for s in stages] if stages else [(rerank_model, None, {})]
        )
        steps = tuple(StageSpec(m, k, **{**engine, **o}) for m, k, o in parsed)
    else:  # nothing names stage 2: the default preset's stages (docs/pipeline_spec.md), with --long-docs
        steps = default_stages(top_k=top_k, long_docs=long_docs)
    fused = FusionSpec(*fusion) if fusion is not None and steps else None
    return PipelineSpec(RecallSpec(recall, limit, **hybrid), steps, fused, top_k)


def check_long_docs_flag(long_docs: str | None) -> None:
    """``--long-docs``: None or one of first, max, top2mean (typer.Exit, exit 2, one line)."""
    from ..rerank.windows import LONG_DOCS

    if long_docs is not None and long_docs not in LONG_DOCS:
        raise fail(f"--long-docs must be one of {', '.join(LONG_DOCS)}, got {long_docs!r}")


def parse_stage(spec: str) -> tuple[str, int | None, dict[str, Any]]:
    """``--stage MODEL[:KEEP][@backend=B,max_length=N]`` -> ``(MODEL, KEEP, options)``.

    A ``:`` suffix that is not a number belongs to the model name (``rerankers:/path:cross-encoder``), so the
    whole spec is the model and it keeps all it gets. After ``@``, options of that stage's cross-encoder:
    ``backend`` (auto, onnx, onnx-int8, torch) and ``max_length`` (tokens per pair), e.g. a cheap first stage
    ``ce:30@backend=onnx-int8,max_length=64``; stages without them use ``--rerank-backend`` and the model's
    own limit. Raises :class:`~twostage_integrations.errors.PipelineSpecError` (an ``InvalidParameterError``)
    naming the bad token.
    """
    from ..spec import parse_stage_token  # the pipeline spec's stage grammar: one parser for --stage and specs

    return parse_stage_token(spec, label="--stage")


def parse_fusion_weight(value: str) -> float | str:
    """``--fusion-weight``: a number in 0..1 or ``auto``.

    Raises:
        typer.Exit: Anything else (exit 2, one ``error:`` line).
    """
    text = value.strip().lower()
    if text == "auto":
        return "auto"
    try:
        weight = float(text)
    except ValueError:
        raise fail(f"--fusion-weight must be a number between 0 and 1, or auto, got {value!r}") from None
    if not 0.0 <= weight <= 1.0:
        raise fail(f"--fusion-weight must be between 0 and 1, or auto, got {value!r}")
    return weight


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one ``error:`` line to stderr and return the Exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


DEBUG_ENV = TWOSTAGE_DEBUG.name


@app.callback()
def main(
    verbose: Annotated[
        bool,
        typer.Option("--verbose", "-v", help="Show model libraries' progress bars and info logs (hidden by default)."),
    ] = False,
    debug: Annotated[
        bool,
        typer.Option("--debug", help="Show the full traceback on errors (also: TWOSTAGE_DEBUG=1).", envvar=DEBUG_ENV),
    ] = False,
) -> None:
    """Two-stage retrieval: recall candidates from Chroma, rerank them with a cross-encoder."""
    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    else:
        quiet_model_libraries()
    if debug:
        os.environ[DEBUG_ENV] = "1"  # read by friendly_errors, wherever the error happens


def debug_enabled() -> bool:
    return (TWOSTAGE_DEBUG.value() or "").strip().lower() not in ("", "0", "false", "no")


def describe_error(exc: BaseException) -> tuple[str, int] | None:
    """One line for an error the user can act on, and the exit code; None for anything else (a bug)."""
    if isinstance(exc, TwoStageError):
        return str(exc), 2
    chroma_errors = sys.modules.get("chromadb.errors")  # only loaded if Chroma ran, so only then can it be one
    if chroma_errors is not None and isinstance(exc, chroma_errors.ChromaError):
        return f"Chroma: {exc}", 2
    httpx = sys.modules.get("httpx")
    if httpx is not None and isinstance(exc, httpx.TransportError):
        return f"connection failed ({type(exc).__name__}: {exc}); is the server running?", 2
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or exc}", 2
    return None


def _one_line(message: str) -> str:
    return " ".join(line.strip() for line in message.splitlines() if line.strip())


def command_flags() -> dict[str, str]:
    """The running command's options by Python parameter name (``top_k`` -> ``--top-k``), read from the click
    command itself so it always matches what ``--help`` shows; empty outside a command."""
    ctx = get_current_context(silent=True)
    if ctx is None:
        return {}
    flags = {}
    for param in ctx.command.params:
        long_names = [opt for opt in param.opts if opt.startswith("--")]
        if param.name and long_names:
            flags[param.name] = long_names[0]
    return flags


def name_flags(exc: TwoStageError, flags: dict[str, str]) -> str:
    """``exc``'s message in the words the user typed: ``top_k must be >= 1`` -> ``--top-k must be >= 1``.

    Library checks name the Python parameter (``check_positive_int(top_k, "top_k")``) and record it on the error
    (:attr:`InvalidParameterError.parameter`); when it is an option of the running command, the message's
    leading name becomes the option. Other messages are left as written.

    >>> name_flags(InvalidParameterError("top_k must be >= 1, got 0", parameter="top_k"), {"top_k": "--top-k"})
    '--top-k must be >= 1, got 0'
    """
    message = str(exc)
    parameter = getattr(exc, "parameter", None)
    if parameter in flags and re.match(rf"{re.escape(parameter)}\b", message):
        return flags[parameter] + message[len(parameter) :]
    return message


def friendly_errors(func: F) -> F:
    """Errors become one ``error:`` line on stderr, never a traceback (unless ``--debug`` / ``TWOSTAGE_DEBUG=1``).
    Our typed errors name the command's options as typed (``--top-k must be >= 1``, see :func:`name_flags`).

    Exit codes: 2 for errors with a message saying what to do (our typed errors, Chroma, files, connections),
    1 for anything unexpected (a bug: the line says so and how to see the traceback), 130 for Ctrl-C."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort, click.exceptions.ClickException, SystemExit):
            raise  # already an exit code / a usage message in click's format
        except KeyboardInterrupt:
            if debug_enabled():
                raise
            typer.echo("error: interrupted; re-run the same command to finish (nothing is stored twice)", err=True)
            sys.exit(130)
        except Exception as exc:
            if debug_enabled():
                raise
            known = describe_error(exc)
            if known is None:
                message = _one_line(f"unexpected {type(exc).__name__}: {exc}")
                raise fail(f"{message} (re-run with --debug for the traceback)", 1) from None
            message = name_flags(exc, command_flags()) if isinstance(exc, TwoStageError) else known[0]
            raise fail(_one_line(message) or type(exc).__name__, known[1]) from None

    return wrapper  # type: ignore[return-value]


def make_recall(
    collection: str,
    db: Path | None,
    host: str | None,
    port: int | None,
    embedding_model: str | None,
    kind: str | PipelineSpec = "dense",
):
    """``kind``: dense (Chroma), bm25 or hybrid (RRF of both) over the same collection, or a spec naming one
    (with its hybrid options)."""
    from ..recall.chroma import ChromaRecall
    from ..spec import PipelineSpec, RecallSpec, recall_over

    if db is not None and (host or port):
        raise fail("pass either --db (embedded Chroma) or --host/--port (Chroma server), not both")
    chroma = ChromaRecall(collection, path=db, host=host, port=port, embedding_model=embedding_model)
    spec = kind if isinstance(kind, PipelineSpec) else PipelineSpec(RecallSpec(kind), top_k=1)
    return recall_over(spec, chroma)
