"""``finetune``: mine hard negatives with stage 1, train the cross-encoder, measure before and after."""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import InvalidDocumentError, InvalidParameterError, ModelLoadError, TwoStageError
from ..evaluation.beir import BeirDataset, index_corpus, load_beir
from ..evaluation.report import EvalReport
from ..evaluation.runner import evaluate, missing_beir_file, require_beir
from ..recall.factory import recall_by_kind
from .card import write_card
from .config import FinetuneConfig, check_same_settings
from .data import Pair, PairBuilder, load_corpus, mine_negatives
from .model import load_base

logger = logging.getLogger(__name__)

PAIRS_FILE = "pairs.jsonl"
SETTINGS_FILE = "settings.json"
INTERRUPT_NOTICE = "interrupted: saving a checkpoint after this step (Ctrl-C again to abort without saving)"


@dataclass
class FinetuneResult:
    """What :func:`finetune` did. ``metrics``: ``{"recall": ..., "before": ..., "after": ...}``, each
    ``{metric name: value}`` on the evaluation split (``before`` is ``None`` for a plain-encoder base,
    which has no trained head to measure; all empty when evaluation was skipped)."""

    out_dir: Path
    settings: dict[str, Any]
    model_info: dict[str, Any]
    n_queries: int
    n_pairs: int
    n_positive: int
    steps: int = 0
    train_seconds: float = 0.0
    interrupted: bool = False
    metrics: dict[str, dict[str, float] | None] = field(default_factory=dict)
    reports: dict[str, EvalReport] = field(default_factory=dict, repr=False)

    def table(self):
        """A rich ``Table``: one row per metric, columns recall alone / base reranker / fine-tuned / change."""
        from rich.table import Table

        s = self.settings
        title = f"{Path(s['dataset']).name} {s['eval_split']}: recall={s['eval_recall']} limit={s['eval_limit']}"
        table = Table(title=title, title_justify="left")
        for col in ("metric", "recall only", "before (base)", "after (fine-tuned)", "change vs before"):
            table.add_column(col, justify="left" if col == "metric" else "right")
        recall, before, after = (self.metrics.get(k) or {} for k in ("recall", "before", "after"))
        for name in after or recall:
            b = before.get(name)
            a = after.get(name)
            table.add_row(
                name,
                f"{recall[name]:.3f}" if name in recall else "",
                f"{b:.3f}" if b is not None else "n/a (new head)",
                f"{a:.3f}" if a is not None else "",
                f"{a - b:+.3f}" if a is not None and b is not None else "",
            )
        return table

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("reports")
        data["out_dir"] = str(self.out_dir)
        data["stages"] = {k: r.to_dict() for k, r in self.reports.items()}
        return data


def finetune(
    dataset_dir: str | os.PathLike[str],
    *,
    config: FinetuneConfig | None = None,
    progress: bool = True,
    callbacks: list[Any] | None = None,
    on_interrupt: Callable[[str], None] | None = None,
    **settings: Any,
) -> FinetuneResult:
    """Fine-tune a cross-encoder reranker on a BEIR-format folder and measure it before and after.

    1. Training queries: the judged queries of ``split``, or pseudo-queries cut from the corpus alone.
    2. Negatives per query: hard ones mined from stage-1 ``recall`` hits, plus random documents.
    3. Training with sentence-transformers' ``CrossEncoderTrainer`` and ``BinaryCrossEntropyLoss`` (one
       calibrated score per pair, the sigmoid head :class:`CrossEncoderReranker` reads). Checkpoints go to
       ``out/checkpoints``; Ctrl-C stops after the current step and saves a usable model in ``out``;
       ``resume=True`` continues from the last checkpoint with the same pairs.
    4. Only then, if ``eval_split`` is set, its qrels are read and the base and the new model are evaluated
       on it (``recall`` + rerank at ``eval_limit``), as ``twostage eval`` would. "Before" is always ``base``.
       ``finetune.json`` is written before this step, so a failing evaluation keeps the model and its record.

    Every file the run reads is checked (exists) before mining starts (see :func:`check_dataset`): a labelled
    run missing a split fails at once; a label-free run without the evaluation files skips step 4 with a
    warning said up front.

    Measured on SciFact, the shipped 6-layer cross-encoder cut to 2 layers one layer at a time (100 steps per
    removal, 400 after the last, 10.6 min on 2 cores): hybrid + it 0.527 nDCG@10, where the same cut at once
    stayed at the constant predictor (0.128).

    Args:
        dataset_dir: BEIR folder: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv`` (label-free
            pairs need the corpus only).
        config: What to train and where (see :class:`FinetuneConfig`).
        progress: Show progress bars for indexing, mining and training.
        callbacks: Extra ``transformers.TrainerCallback`` objects (logging, early stopping...).
        on_interrupt: Called with a one-line notice on the first Ctrl-C (default: logged as a warning).
        **settings: :class:`FinetuneConfig` fields (``base=..., out=..., layers=2``...), alone or overriding
            ``config``'s.

    Returns:
        What was done: settings, pair counts, steps, metrics before and after; also saved as
        ``out/finetune.json`` and the model card ``out/README.md``.

    Raises:
        InvalidParameterError: Invalid settings, or a ``resume`` that does not match the saved run.
        InvalidDocumentError: A file the run needs is missing (raised before any training).
        ModelLoadError: The training extra is not installed, or ``base`` cannot be read.
        TypeError: ``base`` or ``out`` missing, or a keyword that is not a :class:`FinetuneConfig` field.

    >>> from twostage_integrations.finetune import finetune
    >>> result = finetune("scifact", base="all-MiniLM-L6-v2-folder", out="my-ce")  # doctest: +SKIP
    >>> result.metrics["after"]["nDCG@10"]  # doctest: +SKIP
    """
    config = _resolve_config(config, settings)
    dataset = Path(dataset_dir).expanduser()
    _require_training_deps()  # before minutes of mining, not after
    plain, cuts, base_settings = _plan(config, dataset)
    # Every file the run will read is checked now, not after the training it would otherwise follow.
    config = check_dataset(dataset, config)
    base_settings["eval_split"] = config.eval_split
    run = _Run(config, progress, list(callbacks or []), on_interrupt or _log_interrupt)
    finished = _run_rounds(dataset, base_settings, cuts, run)
    result = finished[-1]
    if result.interrupted:
        return result
    out_dir = Path(config.out)
    if len(finished) > 1:
        _merge_rounds(result, finished, base_settings)
        write_card(out_dir, result)
    # Saved before the evaluation too, so a failing evaluation leaves the model, its card and this record.
    (out_dir / "finetune.json").write_text(json.dumps(result.to_dict(), indent=2))
    if config.eval_split:
        _evaluate(result, dataset, config.base, plain, db=config.db, embedding_model=config.embedding_model,
                  progress=progress)  # fmt: skip
        write_card(out_dir, result)
    if not config.skip_calibration and config.pairs == "qrels":
        _calibrate(result, dataset, config, progress=progress)
    (out_dir / "finetune.json").write_text(json.dumps(result.to_dict(), indent=2))
    return result


# Training queries the end-of-run calibration uses at most: a short step next to training.
CALIBRATION_QUERIES = 200


def _calibrate(result: FinetuneResult, dataset: Path, config: FinetuneConfig, *, progress: bool) -> None:
    """Fit calibration.json for the new model on its training split (see ``twostage calibrate``); a failure is
    logged, not raised: the trained model is already saved."""
    from .calibrate import calibrate

    n = CALIBRATION_QUERIES if config.max_queries is None else min(config.max_queries, CALIBRATION_QUERIES)
    try:
        done = calibrate(dataset, str(result.out_dir), split=config.split, recall=config.recall,
                         limit=config.eval_limit, max_queries=n, db=config.db, embedding_model=config.embedding_model,
                         progress=progress)  # fmt: skip
    except TwoStageError as exc:
        logger.warning("calibration skipped (%s); run twostage calibrate later", exc)
        return
    result.model_info["calibration"] = {"path": str(done.path), "method": done.calibration.method,
                                        **done.calibration.metrics["after"]}  # fmt: skip


def check_dataset(dataset_dir: str | os.PathLike[str], config: FinetuneConfig) -> FinetuneConfig:
    """Check, before any mining or training, that ``dataset_dir`` holds every file ``config`` will read.

    A label-free run (``pairs`` other than ``"qrels"``) on a folder without the evaluation split's
    ``queries.jsonl`` or qrels skips the before/after evaluation: said in one warning now, not an error after
    training.

    Args:
        dataset_dir: The BEIR folder.
        config: The run's settings.

    Returns:
        ``config``, with ``eval_split=None`` when the evaluation is skipped.

    Raises:
        InvalidDocumentError: ``corpus.jsonl`` is missing, or a labelled run lacks its training or evaluation
            split (the message names the file and the available splits).
    """
    if config.pairs == "qrels":
        require_beir(dataset_dir, config.split)
    elif missing_beir_file(dataset_dir, None) is not None:
        file = Path(dataset_dir).expanduser() / "corpus.jsonl"
        raise InvalidDocumentError(f"{file} not found: label-free fine-tuning needs at least a BEIR corpus.jsonl")
    if not config.eval_split:
        return config
    missing = missing_beir_file(dataset_dir, config.eval_split)
    if missing is None:
        return config
    if config.pairs == "qrels":
        require_beir(dataset_dir, config.eval_split)  # raises, naming the file and the splits there are
    logger.warning(
        "%s not found: skipping the before/after evaluation of this label-free run (--eval-split none says so "
        "quietly; evaluate later with twostage eval)",
        missing,
    )
    return replace(config, eval_split=None)


def _resolve_config(config: FinetuneConfig | None, settings: dict[str, Any]) -> FinetuneConfig:
    """``config`` with ``settings`` on top (checked again: the caller may have changed a field), or a new one."""
    return FinetuneConfig(**settings) if config is None else replace(config, **settings)


def _log_interrupt(message: str) -> None:
    logger.warning(message)


@dataclass
class _Run:
    """One call's config and the caller's hooks."""

    config: FinetuneConfig
    progress: bool
    callbacks: list[Any]
    notify: Callable[[str], None]  # the Ctrl-C notice


def _plan(config: FinetuneConfig, dataset_dir: Path) -> tuple[bool, list[Any], dict[str, Any]]:
    """Whether ``base`` is a plain encoder, the layer cut of each round (see ``layer_cuts``) and the settings
    saved with the result: the config's, with what it implies filled in."""
    from .model import is_cross_encoder, layer_count, layer_cuts

    plain = not is_cross_encoder(config.base)
    base_layers: int | None = None
    cuts: list[Any] = []
    if config.layers is not None:
        base_layers = layer_count(config.base)
        cuts = layer_cuts(config.layers, base_layers, gradual=not plain)
    settings = {
        "dataset": str(dataset_dir),
        **config.settings(),
        "split": config.split if config.pairs == "qrels" else None,
        "layer_ids": None,
        "base_layers": base_layers,
        "shrink_steps": config.shrink_steps if len(cuts) > 1 else None,
        "lr": config.lr if config.lr is not None else (1e-4 if plain else 2e-5),
        "loss": "BinaryCrossEntropyLoss",
        "eval_recall": config.eval_recall or config.recall,
    }
    return plain, cuts, settings


def _run_rounds(dataset_dir: Path, settings: dict[str, Any], cuts: list[Any], run: _Run) -> list[FinetuneResult]:
    """Train (or, with ``resume``, reuse) each round; stops after an interrupted one, which is then last."""
    config = run.config
    out_dir = Path(config.out)
    finished: list[FinetuneResult] = []
    round_base = str(config.base)
    shrinking = max(len(cuts) - 1, 0)  # rounds that remove a layer before the user's rounds start
    total = shrinking + config.rounds
    layer_ids: list[int] | None = None
    for r in range(1, total + 1):
        # Round r continues from round r-1 on fresh samples; the user's rounds halve the learning rate each time.
        user_round = r - shrinking
        round_settings = {
            **settings,
            "base": round_base,
            "seed": config.seed + r - 1,
            "lr": settings["lr"] * 0.5 ** max(user_round - 1, 0),
            "max_steps": config.max_steps if user_round >= 1 else config.shrink_steps,
            "layers": cuts[r - 1] if r <= len(cuts) else None,
            "layer_ids": layer_ids,
            "round": r,
            "rounds": total,
        }
        round_dir = out_dir if r == total else out_dir / "rounds" / f"round-{r}"
        result = _finished_round(round_dir, round_settings) if config.resume and r < total else None
        if result is None:
            result = _train_round(dataset_dir, round_dir, round_settings, run)
            if result.interrupted:
                return [*finished, result]
            if r < total:
                (round_dir / "finetune.json").write_text(json.dumps(result.to_dict(), indent=2))
        finished.append(result)
        round_base = str(round_dir)
        layer_ids = result.model_info.get("layers_kept", layer_ids)
    return finished


def _merge_rounds(result: FinetuneResult, finished: list[FinetuneResult], settings: dict[str, Any]) -> None:
    """Make the last round's ``result`` describe all ``finished`` rounds: the user's settings, totals, and the
    facts of the round that did each thing."""
    result.settings = {
        **result.settings,
        **{k: settings[k] for k in ("base", "layers", "max_steps", "rounds")},
        "round_bases": [r.settings["base"] for r in finished],
        "round_max_steps": [r.settings["max_steps"] for r in finished],
    }
    result.settings["round_lrs"] = [r.settings["lr"] for r in finished]
    result.settings["round_seeds"] = [r.settings["seed"] for r in finished]
    # The new head and pooler happened in round 1, layer cuts in the first rounds; the losses are the last's.
    cut = [r.model_info for r in finished if "layers_kept" in r.model_info]
    kept = {k: cut[-1][k] for k in ("layers", "layers_kept", "layers_before")} if cut else {}
    losses = {k: result.model_info.get(k) for k in ("last_logged_loss", "mean_train_loss")}
    result.model_info = {**finished[0].model_info, **kept, **losses}
    result.n_queries = sum(r.n_queries for r in finished)
    result.n_pairs = sum(r.n_pairs for r in finished)
    result.n_positive = sum(r.n_positive for r in finished)
    result.steps = sum(r.steps for r in finished)
    result.train_seconds = sum(r.train_seconds for r in finished)


def _finished_round(round_dir: Path, settings: dict[str, Any]) -> FinetuneResult | None:
    """The result of a round that an earlier run finished with the same settings (for ``resume``), else None."""
    file = round_dir / "finetune.json"
    if not file.is_file():
        return None
    data = json.loads(file.read_text())
    check_same_settings(data["settings"], settings)
    data.pop("stages", None)
    data["out_dir"] = Path(data["out_dir"])
    return FinetuneResult(**data)


def _train_round(dataset_dir: Path, out_dir: Path, settings: dict[str, Any], run: _Run) -> FinetuneResult:
    """Mine (or reload) the pairs, train one round from ``settings["base"]``, save model and card in ``out_dir``."""
    ckpt_dir = out_dir / "checkpoints"
    resume = run.config.resume
    if resume and (ckpt_dir / SETTINGS_FILE).is_file():
        train_pairs, n_queries = _resume_pairs(ckpt_dir, settings)
    else:
        if resume and settings["round"] == 1 and settings["rounds"] == 1:
            _resume_pairs(ckpt_dir, settings)  # raises: nothing to resume
        if ckpt_dir.exists() and any(ckpt_dir.glob("checkpoint-*")):
            raise InvalidParameterError(
                f"{ckpt_dir} holds checkpoints of an earlier run: pass --resume to continue it, or another --out"
            )
        resume = False
        data = load_beir(dataset_dir, settings["split"]) if settings["pairs"] == "qrels" else load_corpus(dataset_dir)
        train_pairs, n_queries = _mine(
            data, settings, db=run.config.db, embedding_model=run.config.embedding_model, progress=run.progress
        )
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        with open(ckpt_dir / PAIRS_FILE, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(asdict(p)) + "\n" for p in train_pairs)
        (ckpt_dir / SETTINGS_FILE).write_text(json.dumps(settings, indent=2))

    model, info = _load_and_cut(settings, train_pairs)
    result = FinetuneResult(
        out_dir=out_dir,
        settings=settings,
        model_info=info,
        n_queries=n_queries,
        n_pairs=len(train_pairs),
        n_positive=sum(p.label for p in train_pairs),
    )
    _train(model, train_pairs, ckpt_dir, settings, result, run, resume=resume)
    model.save_pretrained(str(out_dir))
    write_card(out_dir, result)
    if not result.interrupted:
        shutil.rmtree(ckpt_dir / "runs", ignore_errors=True)
        for ckpt in ckpt_dir.glob("checkpoint-*"):
            shutil.rmtree(ckpt)  # optimizer states are 3x the model; the finished model is in out_dir
    return result


def _load_and_cut(settings: dict[str, Any], train_pairs: list[Pair]) -> tuple[Any, dict[str, Any]]:
    """The round's base with its layer cut done; ``layers_kept`` numbered as in the original base."""
    from .model import CHOICE_PAIRS, LEAST_USEFUL, cut_layers, least_useful_layer

    cut = settings["layers"]
    model, info = load_base(
        settings["base"],
        max_length=settings["max_length"],
        layers=None if cut == LEAST_USEFUL else cut,
        seed=settings["seed"],
    )
    if cut == LEAST_USEFUL:
        held = random.Random(settings["seed"]).sample(train_pairs, min(CHOICE_PAIRS, len(train_pairs)))
        drop = least_useful_layer(model, held)
        cut_layers(model, info, [i for i in range(info["layers"]) if i != drop])
    ids = settings.get("layer_ids")
    if ids and "layers_kept" in info:  # this base was cut before: report indices of the original model
        info["layers_kept"] = [ids[i] for i in info["layers_kept"]]
        info["layers_before"] = settings["base_layers"]
    return model, info


def _require_training_deps() -> None:
    try:
        import accelerate  # noqa: F401 - the trainer needs it; fail here with the fix, not deep inside
        import datasets  # noqa: F401
    except ImportError as exc:
        raise ModelLoadError(f"fine-tuning needs {exc.name}: pip install 'twostage-integrations[train]'") from exc


def _mine(
    data: BeirDataset, settings: dict[str, Any], *, db, embedding_model, progress: bool
) -> tuple[list[Pair], int]:
    negatives = (settings["negatives"], settings["random_negatives"])
    builders = [(PairBuilder(data, settings["pairs"]), settings["max_queries"], negatives)]
    if settings["corpus_pairs"]:  # label-free title -> text pairs on top of the judged ones
        n = settings.get("corpus_negatives")
        builders.append((PairBuilder(data, "title-body"), settings["corpus_pairs"], negatives if n is None else (n, n)))
    batches = [(b, b.queries(max_queries=n, seed=settings["seed"]), negs) for b, n, negs in builders]
    chroma = index_corpus(data, db=db, embedding_model=embedding_model, progress=progress)
    retriever = recall_by_kind(settings["recall"], chroma)
    # Dense arms embed every training query in one batch up front; BM25 needs no query vectors.
    texts = [q.text for _, queries, _ in batches for q in queries] if settings["recall"] in ("dense", "hybrid") else []
    out: list[Pair] = []
    with chroma.embedder.cached_queries(texts, progress=progress):
        for builder, queries, (hard, random_negatives) in batches:
            mine_negatives(
                queries,
                retriever,
                list(data.corpus),
                hard=hard,
                random_negatives=random_negatives,
                depth=settings["mine_depth"],
                skip=settings["mine_skip"],
                seed=settings["seed"],
                progress=progress,
            )
            out += builder.pairs(queries)
    return out, sum(len(queries) for _, queries, _ in batches)


def _resume_pairs(ckpt_dir: Path, settings: dict[str, Any]) -> tuple[list[Pair], int]:
    from transformers.trainer_utils import get_last_checkpoint

    pairs_file, settings_file = ckpt_dir / PAIRS_FILE, ckpt_dir / SETTINGS_FILE
    if not (pairs_file.is_file() and settings_file.is_file()) or get_last_checkpoint(str(ckpt_dir)) is None:
        raise InvalidParameterError(f"nothing to resume in {ckpt_dir}: run without --resume first")
    check_same_settings(json.loads(settings_file.read_text()), settings)
    with open(pairs_file, encoding="utf-8") as f:
        train_pairs = [Pair(**json.loads(line)) for line in f]
    return train_pairs, len({p.query for p in train_pairs})


class _Interrupt:
    """First Ctrl-C: finish the current step, save a checkpoint, stop. Second Ctrl-C: abort at once."""

    def __init__(self, notify: Callable[[str], None]) -> None:
        self.notify = notify
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> _Interrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.notify(INTERRUPT_NOTICE)


def _train(model, train_pairs, ckpt_dir: Path, settings, result, run: _Run, *, resume: bool) -> None:
    import torch
    from datasets import Dataset
    from sentence_transformers.cross_encoder import (
        CrossEncoderTrainer,
        CrossEncoderTrainingArguments,
        losses,
    )
    from transformers import TrainerCallback
    from transformers.trainer_utils import get_last_checkpoint

    interrupt = _Interrupt(run.notify)
    save_steps = run.config.save_steps

    class StopOnInterrupt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if interrupt.requested:
                control.should_save = True
                control.should_training_stop = True
            return control

    dataset = Dataset.from_dict(
        {
            "query": [p.query for p in train_pairs],
            "passage": [p.passage for p in train_pairs],
            "label": [float(p.label) for p in train_pairs],
        }
    )
    args = CrossEncoderTrainingArguments(
        output_dir=str(ckpt_dir),
        num_train_epochs=settings["epochs"],
        max_steps=settings["max_steps"] or -1,
        per_device_train_batch_size=settings["batch_size"],
        learning_rate=settings["lr"],
        warmup_steps=settings["warmup"],  # a float < 1 is a fraction of the steps
        seed=settings["seed"],
        save_strategy="steps",
        save_steps=save_steps,
        save_total_limit=2,
        logging_steps=max(1, min(50, save_steps)),
        report_to="none",
        disable_tqdm=not run.progress,
        dataloader_pin_memory=torch.cuda.is_available(),  # pinning is for GPUs; on CPU it only warns
    )
    # Binary cross-entropy on the raw logit: each pair gets one calibrated relevance score, the same sigmoid
    # output CrossEncoderReranker returns; list-wise losses would need all negatives of a query per batch.
    loss = losses.BinaryCrossEntropyLoss(model)
    trainer = CrossEncoderTrainer(
        model=model, args=args, train_dataset=dataset, loss=loss, callbacks=[StopOnInterrupt(), *run.callbacks]
    )
    start = get_last_checkpoint(str(ckpt_dir)) if resume else None
    t0 = time.perf_counter()
    with interrupt:
        trainer.train(resume_from_checkpoint=start)
    result.train_seconds = time.perf_counter() - t0
    result.steps = trainer.state.global_step
    result.interrupted = interrupt.requested
    history = trainer.state.log_history
    last = [float(h["loss"]) for h in history if "loss" in h]
    mean = [float(h["train_loss"]) for h in history if "train_loss" in h]
    result.model_info["last_logged_loss"] = last[-1] if last else None
    result.model_info["mean_train_loss"] = mean[-1] if mean else None


def _evaluate(result: FinetuneResult, dataset_dir: Path, base, plain: bool, *, db, embedding_model, progress):
    from ..rerank.cross_encoder import CrossEncoderReranker

    s = result.settings
    data = load_beir(dataset_dir, s["eval_split"], max_queries=s["eval_max_queries"])  # after training only
    options = dict(recall=s["eval_recall"], limit=s["eval_limit"], db=db, embedding_model=embedding_model)
    after = evaluate(data, reranker=CrossEncoderReranker(result.out_dir), progress=progress, **options)
    result.reports["after"] = after
    result.metrics["recall"] = after.stages[0].metrics
    result.metrics["after"] = after.stages[-1].metrics
    result.metrics["before"] = None
    if not plain:  # a plain encoder has no trained head: "before" would be a random ranking
        before = evaluate(data, reranker=CrossEncoderReranker(base), progress=progress, **options)
        result.reports["before"] = before
        result.metrics["before"] = before.stages[-1].metrics
