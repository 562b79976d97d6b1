"""``finetune``: mine hard negatives with stage 1, train the cross-encoder, measure before and after."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..embeddings import Embedder
from ..errors import InvalidParameterError, ModelLoadError
from ..evaluation.beir import BeirDataset, index_corpus, load_beir
from ..evaluation.report import EvalReport
from ..evaluation.runner import evaluate
from ..recall.hybrid import RECALL_KINDS, recall_by_kind
from ..validation import check_positive_int
from .card import write_card
from .data import PAIR_SOURCES, Pair, PairBuilder, load_corpus, mine_negatives
from .model import load_base

PAIRS_FILE = "pairs.jsonl"
SETTINGS_FILE = "settings.json"
# Settings that change the training data or the model: --resume refuses to continue if any differs.
_RESUME_KEYS: tuple[str, ...] = (
    *("base", "split", "pairs", "negatives", "random_negatives", "mine_depth", "mine_skip", "recall"),
    *(
        "max_queries",
        "corpus_pairs",
        "corpus_negatives",
        "seed",
        "layers",
        "layer_ids",
        "max_length",
        "batch_size",
        "lr",
        "epochs",
        "rounds",
    ),
)


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
    base: str | os.PathLike[str],
    out: str | os.PathLike[str],
    split: str = "train",
    pairs: str = "qrels",
    negatives: int = 3,
    random_negatives: int = 3,
    mine_depth: int = 40,
    mine_skip: int = 10,
    recall: str = "dense",
    epochs: float = 1.0,
    max_steps: int | None = None,
    max_length: int = 256,
    batch_size: int = 16,
    lr: float | None = None,
    warmup: float = 0.1,
    eval_split: str | None = "test",
    eval_recall: str | None = None,
    eval_limit: int = 50,
    eval_max_queries: int | None = None,
    max_queries: int | None = None,
    corpus_pairs: int = 0,
    corpus_negatives: int | None = None,
    seed: int = 0,
    layers: int | Sequence[int] | None = None,
    shrink_steps: int = 100,
    rounds: int = 1,
    resume: bool = False,
    save_steps: int = 100,
    db: str | os.PathLike[str] | None = None,
    embedding_model: str | os.PathLike[str] | Embedder | None = None,
    progress: bool = True,
    command: str | None = None,
    callbacks: list[Any] | None = None,
) -> FinetuneResult:
    """Fine-tune a cross-encoder reranker on a BEIR-format folder and measure it before and after.

    1. Training queries: the judged queries of ``split`` (``pairs="qrels"``), or pseudo-queries cut from the
       corpus alone (``"title-body"``, ``"first-sentence"``, ``"last-sentence"``: only ``corpus.jsonl`` is needed).
    2. Negatives per query: ``negatives`` sampled from stage-1 ``recall`` hits at ranks ``mine_skip+1 ..
       mine_depth``, plus ``random_negatives`` random documents; positives are never negatives.
    3. Training with sentence-transformers' ``CrossEncoderTrainer`` and ``BinaryCrossEntropyLoss`` (one
       calibrated score per pair, the sigmoid head :class:`CrossEncoderReranker` reads). Checkpoints go to
       ``out/checkpoints``; Ctrl-C stops after the current step and saves a usable model in ``out``;
       ``resume=True`` continues from the last checkpoint with the same pairs.
    4. Only then, if ``eval_split`` is set, its qrels are read and the base and the new model are evaluated
       on it (``recall`` + rerank at ``eval_limit``), as ``twostage eval`` would.

    ``corpus_pairs``: with ``pairs="qrels"``, also train on that many label-free title -> text pairs (a seeded
    sample of the corpus; the recipe of the shipped SciFact cross-encoder). ``corpus_negatives``: hard *and*
    random negatives (N of each) per such pair; default: ``negatives`` and ``random_negatives``.
    ``callbacks``: extra ``transformers.TrainerCallback`` objects (logging, early stopping...).

    ``base``: an existing 1-logit cross-encoder (training continues; default ``lr`` 2e-5) or a plain encoder
    such as all-MiniLM-L6-v2 (a new head, pooler reset to identity; default ``lr`` 1e-4). ``layers`` keeps
    the first N transformer layers, or a list of layer indices (see
    :func:`~twostage_integrations.finetune.keep_layers`).

    ``layers`` on a trained cross-encoder removes one layer at a time, each removal but the last followed by
    ``shrink_steps`` training steps on freshly mined pairs (then the last removal gets the full training):
    a head reading ``[CLS]`` survives one missing layer, not four. A count N drops the least useful layer
    each time (:func:`~twostage_integrations.finetune.model.least_useful_layer`); listed indices drop the
    others from the highest down. Measured on SciFact, the shipped 6-layer cross-encoder to 2 layers (100
    steps per removal, 400 after the last, 10.6 min on 2 cores): hybrid + it 0.527 nDCG@10, where the same
    cut at once stayed at the constant predictor (0.128).

    ``rounds``: train N rounds in one call, each continuing from the last with freshly mined pairs (seed
    ``seed + r - 1``) and half the previous learning rate: the recipe of the shipped SciFact model is
    ``rounds=2``. Finished rounds are kept in ``out/rounds/round-R``; ``resume=True`` skips them. "Before"
    is always the ``base`` given here.

    >>> from twostage_integrations.finetune import finetune
    >>> result = finetune("scifact", base="all-MiniLM-L6-v2-folder", out="my-ce")  # doctest: +SKIP
    >>> result.metrics["after"]["nDCG@10"]  # doctest: +SKIP
    """
    dataset_dir = Path(dataset_dir).expanduser()
    out_dir = Path(out).expanduser()
    _check_args(pairs, recall, eval_recall, split, eval_split, epochs, warmup, locals())
    from .model import is_cross_encoder, layer_count, layer_cuts

    _require_training_deps()  # before minutes of mining, not after
    plain = not is_cross_encoder(base)
    base_layers: int | None = None
    cuts: list[Any] = []  # what each round does to the layers (see layer_cuts)
    if layers is not None:
        base_layers = layer_count(base)
        cuts = layer_cuts(layers, base_layers, gradual=not plain)
    lr = lr if lr is not None else (1e-4 if plain else 2e-5)
    settings = {
        "dataset": str(dataset_dir),
        "base": str(base),
        "split": split if pairs == "qrels" else None,
        "pairs": pairs,
        "negatives": negatives,
        "random_negatives": random_negatives,
        "mine_depth": mine_depth,
        "mine_skip": mine_skip,
        "recall": recall,
        "max_queries": max_queries,
        "corpus_pairs": corpus_pairs,
        "corpus_negatives": corpus_negatives,
        "seed": seed,
        "layers": layers if layers is None or isinstance(layers, int) else list(layers),
        "layer_ids": None,
        "base_layers": base_layers,
        "shrink_steps": shrink_steps if len(cuts) > 1 else None,
        "max_length": max_length,
        "batch_size": batch_size,
        "lr": lr,
        "warmup": warmup,
        "epochs": epochs,
        "max_steps": max_steps,
        "loss": "BinaryCrossEntropyLoss",
        "rounds": rounds,
        "eval_split": eval_split,
        "eval_recall": eval_recall or recall,
        "eval_limit": eval_limit,
        "eval_max_queries": eval_max_queries,
        "command": command,
    }
    options: dict[str, Any] = dict(save_steps=save_steps, db=db, embedding_model=embedding_model, progress=progress)
    finished: list[FinetuneResult] = []
    round_base: str | os.PathLike[str] = base
    shrinking = max(len(cuts) - 1, 0)  # rounds that remove a layer before the user's rounds start
    total = shrinking + rounds
    layer_ids: list[int] | None = None
    for r in range(1, total + 1):
        # Round r continues from round r-1 on fresh samples; the user's rounds halve the learning rate each time.
        user_round = r - shrinking
        round_settings = {
            **settings,
            "base": str(round_base),
            "seed": seed + r - 1,
            "lr": lr * 0.5 ** max(user_round - 1, 0),
            "max_steps": max_steps if user_round >= 1 else shrink_steps,
            "layers": cuts[r - 1] if r <= len(cuts) else None,
            "layer_ids": layer_ids,
            "round": r,
            "rounds": total,
        }
        round_dir = out_dir if r == total else out_dir / "rounds" / f"round-{r}"
        result = _finished_round(round_dir, round_settings) if resume and r < total else None
        if result is None:
            result = _train_round(
                dataset_dir, round_dir, round_settings, resume=resume, callbacks=callbacks or [], **options
            )
            if result.interrupted:
                return result
            if r < total:
                (round_dir / "finetune.json").write_text(json.dumps(result.to_dict(), indent=2))
        finished.append(result)
        round_base = round_dir
        layer_ids = result.model_info.get("layers_kept", layer_ids)

    result = finished[-1]
    if total > 1:
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
        write_card(out_dir, result)
    if eval_split:
        _evaluate(result, dataset_dir, base, plain, db=db, embedding_model=embedding_model, progress=progress)
        write_card(out_dir, result)
    (out_dir / "finetune.json").write_text(json.dumps(result.to_dict(), indent=2))
    return result


def _finished_round(round_dir: Path, settings: dict[str, Any]) -> FinetuneResult | None:
    """The result of a round that an earlier run finished with the same settings (for ``resume``), else None."""
    file = round_dir / "finetune.json"
    if not file.is_file():
        return None
    data = json.loads(file.read_text())
    _check_same_settings(data["settings"], settings)
    data.pop("stages", None)
    data["out_dir"] = Path(data["out_dir"])
    return FinetuneResult(**data)


def _train_round(
    dataset_dir: Path,
    out_dir: Path,
    settings: dict[str, Any],
    *,
    resume: bool,
    save_steps: int,
    db,
    embedding_model,
    progress: bool,
    callbacks: list[Any],
) -> FinetuneResult:
    """Mine (or reload) the pairs, train one round from ``settings["base"]``, save model and card in ``out_dir``."""
    ckpt_dir = out_dir / "checkpoints"
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
        train_pairs, n_queries = _mine(data, settings, db=db, embedding_model=embedding_model, progress=progress)
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
    _train(model, train_pairs, ckpt_dir, settings, result, resume=resume, save_steps=save_steps, progress=progress,
           callbacks=callbacks)  # fmt: skip
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


def _check_args(pairs, recall, eval_recall, split, eval_split, epochs, warmup, values: dict[str, Any]) -> None:
    if pairs not in PAIR_SOURCES:
        raise InvalidParameterError(f"pairs must be one of {', '.join(PAIR_SOURCES)}, got {pairs!r}")
    for kind in (recall, eval_recall or recall):
        if kind not in RECALL_KINDS:
            raise InvalidParameterError(f"recall must be one of {', '.join(RECALL_KINDS)}, got {kind!r}")
    if pairs == "qrels" and eval_split and split == eval_split:
        raise InvalidParameterError(
            f"training and evaluation both use split {split!r}: the numbers would be meaningless; "
            "pass another --eval-split (or none)"
        )
    if values["corpus_negatives"] is not None:
        check_positive_int(values["corpus_negatives"], "corpus_negatives")
    if values["corpus_pairs"] and pairs != "qrels":
        raise InvalidParameterError(
            "corpus_pairs adds title-body pairs to a qrels run; with --pairs label-free use --max-queries"
        )
    if not isinstance(values["corpus_pairs"], int) or values["corpus_pairs"] < 0:
        raise InvalidParameterError(f"corpus_pairs must be an integer >= 0, got {values['corpus_pairs']!r}")
    if not epochs > 0:
        raise InvalidParameterError(f"epochs must be > 0, got {epochs!r}")
    if not 0 <= warmup < 1:
        raise InvalidParameterError(f"warmup is a fraction of the steps in [0, 1), got {warmup!r}")
    for name in ("max_length", "batch_size", "eval_limit", "save_steps", "rounds", "shrink_steps"):
        check_positive_int(values[name], name)
    for name in ("max_steps", "max_queries", "eval_max_queries", "layers"):
        if values[name] is not None and not (name == "layers" and not isinstance(values[name], int)):
            check_positive_int(values[name], name)
    if values["lr"] is not None and not values["lr"] > 0:
        raise InvalidParameterError(f"lr must be > 0, got {values['lr']!r}")


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
    _check_same_settings(json.loads(settings_file.read_text()), settings)
    with open(pairs_file, encoding="utf-8") as f:
        train_pairs = [Pair(**json.loads(line)) for line in f]
    return train_pairs, len({p.query for p in train_pairs})


def _check_same_settings(saved: dict[str, Any], settings: dict[str, Any]) -> None:
    changed = [k for k in _RESUME_KEYS if saved.get(k) != settings.get(k)]
    if changed:
        diff = ", ".join(f"{k}: {saved.get(k)!r} -> {settings.get(k)!r}" for k in changed)
        raise InvalidParameterError(f"--resume needs the same settings as the interrupted run ({diff})")


class _Interrupt:
    """First Ctrl-C: finish the current step, save a checkpoint, stop. Second Ctrl-C: abort at once."""

    def __init__(self) -> None:
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
        print("\ninterrupted: saving a checkpoint after this step (Ctrl-C again to abort without saving)", flush=True)


def _train(model, train_pairs, ckpt_dir: Path, settings, result, *, resume, save_steps, progress, callbacks):
    import torch
    from datasets import Dataset
    from sentence_transformers.cross_encoder import (
        CrossEncoderTrainer,
        CrossEncoderTrainingArguments,
        losses,
    )
    from transformers import TrainerCallback
    from transformers.trainer_utils import get_last_checkpoint

    interrupt = _Interrupt()

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
        disable_tqdm=not progress,
        dataloader_pin_memory=torch.cuda.is_available(),  # pinning is for GPUs; on CPU it only warns
    )
    # Binary cross-entropy on the raw logit: each pair gets one calibrated relevance score, the same sigmoid
    # output CrossEncoderReranker returns; list-wise losses would need all negatives of a query per batch.
    loss = losses.BinaryCrossEntropyLoss(model)
    trainer = CrossEncoderTrainer(
        model=model, args=args, train_dataset=dataset, loss=loss, callbacks=[StopOnInterrupt(), *callbacks]
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
