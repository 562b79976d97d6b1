"""The model card (README.md) written next to a fine-tuned reranker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .model import CHOICE_PAIRS

_HYPER: tuple[str, ...] = (
    *("negatives", "random_negatives", "mine_depth", "mine_skip", "recall", "max_queries", "corpus_pairs"),
    "corpus_negatives",
    *("epochs", "max_steps", "batch_size", "lr", "warmup", "max_length", "layers", "seed"),
)


def write_card(out_dir: Path, result: Any) -> Path:
    """Write ``out_dir/README.md``: base, data, hyper-parameters, metrics before/after, command line."""
    s, info = result.settings, result.model_info
    source = f"qrels/{s['split']}.tsv (judged queries)" if s["pairs"] == "qrels" else f"label-free `{s['pairs']}` pairs"
    if s.get("corpus_pairs"):
        source += f" + {s['corpus_pairs']} label-free title-body pairs"
    kind = (
        "plain encoder: new 1-logit head, BERT pooler reset to identity"
        if info.get("plain_encoder")
        else ("existing cross-encoder: training continued")
    )
    kept = info.get("layers_kept")
    layers = f"{info['layers']} transformer layers" + (
        f" (layers {', '.join(map(str, kept))} of {info['layers_before']} kept, 0-based)" if kept else ""
    )
    lines = [
        f"# {out_dir.name}",
        "",
        "A cross-encoder reranker fine-tuned with `twostage finetune` (sentence-transformers CrossEncoderTrainer,",
        "binary cross-entropy, 1 logit, sigmoid activation). Load it with",
        f'`CrossEncoderReranker(model="{out_dir}")` or `twostage query --rerank-model {out_dir}`.',
        "",
        f"- Base: `{s['base']}` ({kind}); {layers}.",
        f"- Data: `{s['dataset']}`, {source}: {result.n_queries} training queries, {result.n_pairs} pairs "
        f"({result.n_positive} positive). Negatives mined with `{s['recall']}` recall.",
        f"- Training: {result.steps} steps in {result.train_seconds / 60:.1f} min"
        + (f", mean loss {info['mean_train_loss']:.4f}" if info.get("mean_train_loss") is not None else "")
        + (f", last logged loss {info['last_logged_loss']:.4f}" if info.get("last_logged_loss") is not None else "")
        + (" — INTERRUPTED: resume with `--resume`" if result.interrupted else "")
        + ".",
        "- Hyper-parameters: " + ", ".join(f"{k}={s[k]}" for k in _HYPER) + ".",
    ]
    if s.get("shrink_steps") and s.get("round_max_steps"):
        how = (
            f"the least useful each time (ROC AUC on {CHOICE_PAIRS} training pairs)"
            if isinstance(s["layers"], int)
            else "the highest first"
        )
        steps = ", ".join(str(n) if n else f"{s['epochs']:g} epoch" for n in s["round_max_steps"])
        lines.append(
            f"- Layers removed one at a time, {how}, with {s['shrink_steps']} training steps after each removal "
            f"but the last (steps per round: {steps})."
        )
    if s.get("round_lrs"):
        lines.append(
            f"- {len(s['round_lrs'])} rounds, each continuing from the previous one on freshly mined pairs: "
            f"lr {s['round_lrs']}, seeds {s['round_seeds']} (steps, pairs and minutes above are totals)."
        )
    if s.get("eval_split") and s["eval_split"] != s.get("split"):
        lines.append(f"- The evaluation split `{s['eval_split']}` was read only after training (never for training).")
    if s.get("command"):
        lines += ["", "Command:", "", "```", s["command"], "```"]
    if result.metrics.get("after"):
        lines += ["", "## Evaluation", "", _metrics_table(result)]
    path = out_dir / "README.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _metrics_table(result: Any) -> str:
    s = result.settings
    recall, before, after = (result.metrics.get(k) or {} for k in ("recall", "before", "after"))
    head = (
        f"`{s['eval_split']}` split, {s['eval_recall']} recall, top {s['eval_limit']} reranked"
        + (f", first {s['eval_max_queries']} queries" if s.get("eval_max_queries") else "")
        + ":\n\n| metric | recall only | before (base) | after (fine-tuned) |\n|---|---|---|---|"
    )
    rows = [
        f"| {n} | {recall.get(n, float('nan')):.3f} | "
        + (f"{before[n]:.3f}" if n in before else "n/a (new head)")
        + f" | {after[n]:.3f} |"
        for n in after
    ]
    return "\n".join([head, *rows])
