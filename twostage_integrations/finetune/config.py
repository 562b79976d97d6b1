"""``FinetuneConfig``: every setting of :func:`~twostage_integrations.finetune.finetune` defined once.

Each field's ``metadata`` says what the field is for, so validation, the saved settings, the ``resume`` check
and the ``twostage finetune`` options all come from the same definition:

- ``role``: :data:`MUST_MATCH` (saved; it changes the training data or the model, so ``resume`` refuses to
  continue a run saved with another value), :data:`MAY_DIFFER` (saved; a resumed run may change it) or
  :data:`RUN` (where and how this call runs: not saved).
- ``cli``: whether ``twostage finetune`` has an option for it; ``help``: that option's help text (``None``
  for an option several commands share, such as ``--db``); ``flags``: its names when not derived from the
  field name; ``cli_type``: the option's type when it differs from the field's; ``from_cli``: turns the
  option's value into the field's.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..embeddings import Embedder
from ..errors import InvalidParameterError
from ..recall.factory import RECALL_KINDS
from ..validation import check_positive_int
from .data import PAIR_SOURCES
from .model import parse_layers

MUST_MATCH = "must-match"
MAY_DIFFER = "may-differ"
RUN = "run"
# Round settings computed by finetune (not fields) that must also match on resume: the original numbering of
# the layers an earlier round kept.
DERIVED_MUST_MATCH: tuple[str, ...] = ("layer_ids",)


def _meta(
    role: str,
    help: str | None = None,
    *,
    cli: bool = True,
    flags: tuple[str, ...] = (),
    cli_type: Any = None,
    from_cli: Callable[[Any], Any] | None = None,
) -> dict[str, Any]:
    return {"role": role, "help": help, "cli": cli, "flags": flags, "cli_type": cli_type, "from_cli": from_cli}


def _eval_split_option(text: str) -> str | None:
    return None if text.lower() == "none" else text


def _layers_option(text: str | None) -> int | list[int] | None:
    return None if text is None else parse_layers(text)


@dataclass(kw_only=True)
class FinetuneConfig:
    """What :func:`~twostage_integrations.finetune.finetune` trains, from what, and where it writes.

    Checked on creation (and by :meth:`validate`); ``dataclasses.replace`` checks the copy too.

    Args:
        base: An existing 1-logit cross-encoder (training continues; default ``lr`` 2e-5) or a plain encoder
            such as all-MiniLM-L6-v2 (a new head, pooler reset to identity; default ``lr`` 1e-4).
        out: Folder the fine-tuned reranker, its model card and ``finetune.json`` are written to.
        split: Training qrels, ``qrels/<split>.tsv`` (with ``pairs="qrels"``).
        pairs: ``"qrels"`` (judged queries) or label-free pseudo-queries cut from the corpus alone:
            ``"title-body"``, ``"first-sentence"``, ``"last-sentence"``.
        negatives: Hard negatives per query, sampled from stage-1 ``recall`` hits at ranks
            ``mine_skip + 1 .. mine_depth``; positives are never negatives.
        random_negatives: Random negatives per query.
        mine_depth: Recall depth hard negatives come from.
        mine_skip: Top recall hits skipped when mining (likely unjudged positives).
        recall: Stage 1 for mining (and evaluation, unless ``eval_recall``): dense, bm25 or hybrid.
        epochs: Passes over the training pairs.
        max_steps: Stop after this many steps (overrides ``epochs``).
        max_length: Token limit per (query, passage) pair.
        batch_size: Pairs per training step.
        lr: Learning rate; ``None``: 1e-4 for a plain encoder, 2e-5 for a cross-encoder.
        warmup: Warm-up as a fraction of the steps, in [0, 1).
        eval_split: Held-back qrels measured before and after, read only after training; ``None`` skips it.
        eval_recall: Stage 1 for evaluation; ``None``: ``recall``.
        eval_limit: Candidates recalled and reranked per query when evaluating.
        eval_max_queries: Evaluate on the first N judged queries only.
        max_queries: Train on at most N queries (label-free: a seeded sample of documents).
        corpus_pairs: With ``pairs="qrels"``, also train on N label-free title -> text pairs (a seeded sample
            of the corpus; the recipe of the shipped SciFact cross-encoder).
        corpus_negatives: Hard *and* random negatives (N of each) per corpus pair; ``None``: ``negatives``
            and ``random_negatives``.
        seed: Seed for mining, head initialisation and shuffling.
        layers: Keep N transformer layers, or the 0-based layer indices listed. From a trained cross-encoder
            one layer goes per round, each removal but the last followed by ``shrink_steps`` steps on freshly
            mined pairs (a count drops the least useful layer each time, listed indices drop the others from
            the highest down); a plain encoder keeps the first N at once.
        shrink_steps: Training steps after each layer removed but the last.
        rounds: Train N rounds, each from the last on freshly mined pairs (seed ``seed + r - 1``) at half the
            previous learning rate; finished rounds are kept in ``out/rounds/round-R``.
        resume: Continue the interrupted run in ``out`` from its last checkpoint (finished rounds are kept).
        save_steps: Save a resumable checkpoint every N steps.
        db: Chroma folder the corpus is indexed in (default: ``$TWOSTAGE_DB``).
        embedding_model: Embedding model (id, folder or :class:`Embedder`) of the dense recall.
        command: The command line, recorded in the settings and the model card.

    Raises:
        InvalidParameterError: A value out of range, an unknown ``pairs`` or ``recall``, training and
            evaluation on the same split, or ``corpus_pairs`` without ``pairs="qrels"``.
    """

    base: str | os.PathLike[str] = field(
        metadata=_meta(
            MUST_MATCH,
            "Model to start from: a 1-logit cross-encoder (continue) or a plain encoder (new head).",
            flags=("--base",),
            cli_type=str,
        )
    )
    out: str | os.PathLike[str] = field(
        metadata=_meta(RUN, "Folder to write the fine-tuned reranker to.", flags=("--out", "-o"), cli_type=Path)
    )
    split: str = field(default="train", metadata=_meta(MUST_MATCH, "Training qrels: qrels/<split>.tsv."))
    pairs: str = field(
        default="qrels",
        metadata=_meta(
            MUST_MATCH, "Positives: qrels (judged queries), or label-free title-body / first-sentence / last-sentence."
        ),
    )
    negatives: int = field(default=3, metadata=_meta(MUST_MATCH, "Hard negatives per query, from stage-1 recall."))
    random_negatives: int = field(default=3, metadata=_meta(MUST_MATCH, "Random negatives per query."))
    mine_depth: int = field(
        default=40, metadata=_meta(MUST_MATCH, "Hard negatives come from recall ranks up to this depth.")
    )
    mine_skip: int = field(
        default=10,
        metadata=_meta(MUST_MATCH, "Skip this many top recall hits (likely unjudged positives) when mining."),
    )
    recall: str = field(
        default="dense", metadata=_meta(MUST_MATCH, "Stage 1 used for mining (and evaluation): dense, bm25, hybrid.")
    )
    epochs: float = field(default=1.0, metadata=_meta(MUST_MATCH, "Passes over the training pairs."))
    max_steps: int | None = field(
        default=None, metadata=_meta(MAY_DIFFER, "Stop after this many steps (overrides --epochs).")
    )
    max_length: int = field(default=256, metadata=_meta(MUST_MATCH, "Token limit per (query, passage) pair."))
    batch_size: int = field(default=16, metadata=_meta(MUST_MATCH, "Pairs per training step."))
    lr: float | None = field(
        default=None,
        metadata=_meta(MUST_MATCH, "Learning rate (default: 1e-4 for a plain encoder, 2e-5 for a cross-encoder)."),
    )
    warmup: float = field(default=0.1, metadata=_meta(MAY_DIFFER, cli=False))
    eval_split: str | None = field(
        default="test",
        metadata=_meta(
            MAY_DIFFER,
            "Held-back qrels to measure before/after on, read after training; 'none' to skip.",
            cli_type=str,
            from_cli=_eval_split_option,
        ),
    )
    eval_recall: str | None = field(default=None, metadata=_meta(MAY_DIFFER, cli=False))
    eval_limit: int = field(
        default=50, metadata=_meta(MAY_DIFFER, "Candidates recalled and reranked per query when evaluating.")
    )
    eval_max_queries: int | None = field(
        default=None, metadata=_meta(MAY_DIFFER, "Evaluate on the first N judged queries only.")
    )
    skip_calibration: bool = field(
        default=False,
        metadata=_meta(
            RUN,
            "Do not fit calibration.json (score -> P(relevant)) on up to 200 training queries at the end.",
            flags=("--skip-calibration",),
        ),
    )
    max_queries: int | None = field(
        default=None,
        metadata=_meta(MUST_MATCH, "Train on at most N queries (label-free: a seeded sample of documents)."),
    )
    corpus_pairs: int = field(
        default=0,
        metadata=_meta(
            MUST_MATCH, "With --pairs qrels: also train on N label-free title -> text pairs from the corpus."
        ),
    )
    corpus_negatives: int | None = field(
        default=None, metadata=_meta(MUST_MATCH, "Hard and random negatives (N of each) per --corpus-pairs pair.")
    )
    seed: int = field(default=0, metadata=_meta(MUST_MATCH, "Seed for mining, head initialisation and shuffling."))
    layers: int | Sequence[int] | None = field(
        default=None,
        metadata=_meta(
            MUST_MATCH,
            "A cheaper reranker with N layers, or the 0-based layers listed (0,5). From a cross-encoder, "
            "layers go one at a time (a count drops the least useful each time); a plain encoder keeps the first N.",
            cli_type=str | None,
            from_cli=_layers_option,
        ),
    )
    shrink_steps: int = field(
        default=100,
        metadata=_meta(
            MAY_DIFFER, "With --layers on a cross-encoder: training steps after each layer removed but the last."
        ),
    )
    rounds: int = field(
        default=1,
        metadata=_meta(MUST_MATCH, "Train N rounds, each from the last on fresh samples at half the learning rate."),
    )
    resume: bool = field(
        default=False,
        metadata=_meta(RUN, "Continue the interrupted run in --out (finished rounds are kept).", flags=("--resume",)),
    )
    save_steps: int = field(default=100, metadata=_meta(RUN, "Save a resumable checkpoint every N steps."))
    db: str | os.PathLike[str] | None = field(default=None, metadata=_meta(RUN))  # the CLI's shared --db
    embedding_model: str | os.PathLike[str] | Embedder | None = field(default=None, metadata=_meta(RUN))
    command: str | None = field(default=None, metadata=_meta(MAY_DIFFER, cli=False))  # the CLI records its own

    def __post_init__(self) -> None:
        # Saved as plain JSON values, so a config read back from its settings compares equal.
        self.base = str(self.base)
        self.out = Path(self.out).expanduser()
        if self.layers is not None and not isinstance(self.layers, (int, str)):
            self.layers = list(self.layers)
        self.validate()

    def validate(self) -> None:
        """Check every value (runs on creation; call it again after changing a field).

        Raises:
            InvalidParameterError: The first value that is out of range or inconsistent with another.
        """
        if self.pairs not in PAIR_SOURCES:
            raise InvalidParameterError(f"pairs must be one of {', '.join(PAIR_SOURCES)}, got {self.pairs!r}")
        for kind in (self.recall, self.eval_recall or self.recall):
            if kind not in RECALL_KINDS:
                raise InvalidParameterError(f"recall must be one of {', '.join(RECALL_KINDS)}, got {kind!r}")
        if self.pairs == "qrels" and self.eval_split and self.split == self.eval_split:
            raise InvalidParameterError(
                f"training and evaluation both use split {self.split!r}: the numbers would be meaningless; "
                "pass another --eval-split (or none)"
            )
        if self.corpus_negatives is not None:
            check_positive_int(self.corpus_negatives, "corpus_negatives")
        if self.corpus_pairs and self.pairs != "qrels":
            raise InvalidParameterError(
                "corpus_pairs adds title-body pairs to a qrels run; with --pairs label-free use --max-queries"
            )
        if not isinstance(self.corpus_pairs, int) or self.corpus_pairs < 0:
            raise InvalidParameterError(f"corpus_pairs must be an integer >= 0, got {self.corpus_pairs!r}")
        if not self.epochs > 0:
            raise InvalidParameterError(f"epochs must be > 0, got {self.epochs!r}")
        if not 0 <= self.warmup < 1:
            raise InvalidParameterError(f"warmup is a fraction of the steps in [0, 1), got {self.warmup!r}")
        for name in ("max_length", "batch_size", "eval_limit", "save_steps", "rounds", "shrink_steps"):
            check_positive_int(getattr(self, name), name)
        for name in ("max_steps", "max_queries", "eval_max_queries"):
            if getattr(self, name) is not None:
                check_positive_int(getattr(self, name), name)
        if isinstance(self.layers, int):  # a list of indices is checked against the model's layers later
            check_positive_int(self.layers, "layers")
        if self.lr is not None and not self.lr > 0:
            raise InvalidParameterError(f"lr must be > 0, got {self.lr!r}")

    def settings(self) -> dict[str, Any]:
        """The saved settings: every field but the :data:`RUN` ones, as JSON-ready values.

        Returns:
            ``{field name: value}``; :meth:`from_settings` turns it back into an equal config.
        """
        return {f.name: getattr(self, f.name) for f in fields(self) if f.metadata["role"] != RUN}

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], **run: Any) -> FinetuneConfig:
        """A config from saved settings (keys that are not saved fields, such as ``dataset``, are ignored).

        Args:
            settings: What :meth:`settings` returned, e.g. read back from ``finetune.json``.
            **run: The :data:`RUN` fields (``out`` at least), which are not saved.

        Returns:
            The config, checked.

        Raises:
            InvalidParameterError: A saved value is invalid.
            TypeError: ``out`` is missing or a key of ``run`` is not a field.
        """
        saved = {f.name for f in fields(cls) if f.metadata["role"] != RUN}
        return cls(**{k: v for k, v in settings.items() if k in saved}, **run)


def must_match_keys() -> tuple[str, ...]:
    """Settings keys whose saved and current values must be equal for ``resume`` to continue a run."""
    return (*(f.name for f in fields(FinetuneConfig) if f.metadata["role"] == MUST_MATCH), *DERIVED_MUST_MATCH)


def changed_settings(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """The :func:`must_match_keys` whose values differ between ``saved`` and ``current`` settings."""
    return [k for k in must_match_keys() if saved.get(k) != current.get(k)]


def check_same_settings(saved: Mapping[str, Any], current: Mapping[str, Any]) -> None:
    """Refuse to resume a run saved with other settings.

    Raises:
        InvalidParameterError: A :func:`must_match_keys` setting differs; the message lists old -> new.
    """
    changed = changed_settings(saved, current)
    if changed:
        diff = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in changed)
        raise InvalidParameterError(f"--resume needs the same settings as the interrupted run ({diff})")
