"""``FinetuneConfig``: one definition gives the checks, the saved settings, the --resume comparison and the
``twostage finetune`` options (no weights, no training: the training function is replaced where needed)."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shlex
import signal
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import twostage_integrations.finetune as finetune_package
from twostage_integrations.cli import app
from twostage_integrations.cli.finetune import cli_fields
from twostage_integrations.errors import InvalidParameterError
from twostage_integrations.finetune import FinetuneConfig, FinetuneResult, finetune
from twostage_integrations.finetune import train as train_module
from twostage_integrations.finetune.config import (
    DERIVED_MUST_MATCH,
    MAY_DIFFER,
    MUST_MATCH,
    RUN,
    changed_settings,
    check_same_settings,
    must_match_keys,
)

REQUIRED = dict(base="models/ce", out="runs/ce")
FIELDS = {f.name: f for f in dataclasses.fields(FinetuneConfig)}

# (overrides, the exact message finetune() raised for them before the config existed)
BAD_VALUES = [
    (dict(pairs="judged"), "pairs must be one of qrels, title-body, first-sentence, last-sentence, got 'judged'"),
    (dict(recall="sparse"), "recall must be one of dense, bm25, hybrid, got 'sparse'"),
    (dict(eval_recall="sparse"), "recall must be one of dense, bm25, hybrid, got 'sparse'"),
    (
        dict(split="test"),
        "training and evaluation both use split 'test': the numbers would be meaningless; "
        "pass another --eval-split (or none)",
    ),
    (dict(corpus_negatives=0), "corpus_negatives must be >= 1, got 0"),
    (
        dict(corpus_pairs=2, pairs="title-body"),
        "corpus_pairs adds title-body pairs to a qrels run; with --pairs label-free use --max-queries",
    ),
    (dict(corpus_pairs=-1), "corpus_pairs must be an integer >= 0, got -1"),
    (dict(corpus_pairs=1.5), "corpus_pairs must be an integer >= 0, got 1.5"),
    (dict(epochs=0), "epochs must be > 0, got 0"),
    (dict(warmup=1.0), "warmup is a fraction of the steps in [0, 1), got 1.0"),
    (dict(warmup=-0.1), "warmup is a fraction of the steps in [0, 1), got -0.1"),
    *[
        (dict([(name, 0)]), f"{name} must be >= 1, got 0")
        for name in ("max_length", "batch_size", "eval_limit", "save_steps", "rounds", "shrink_steps")
    ],
    (dict(batch_size=True), "batch_size must be an integer >= 1, got True"),
    *[(dict([(name, 0)]), f"{name} must be >= 1, got 0") for name in ("max_steps", "max_queries", "eval_max_queries")],
    (dict(max_steps=2.5), "max_steps must be an integer >= 1, got 2.5"),
    (dict(layers=0), "layers must be >= 1, got 0"),
    (dict(lr=0.0), "lr must be > 0, got 0.0"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD_VALUES, ids=[str(o) for o, _ in BAD_VALUES])
def test_each_bad_value_is_refused_with_a_typed_error(overrides, message):
    with pytest.raises(InvalidParameterError, match=f"^{re.escape(message)}$"):
        FinetuneConfig(**REQUIRED, **overrides)
    good = FinetuneConfig(**REQUIRED)
    with pytest.raises(InvalidParameterError, match=re.escape(message)):
        dataclasses.replace(good, **overrides)  # a copy is checked too
    for name, value in overrides.items():
        setattr(good, name, value)
    with pytest.raises(InvalidParameterError, match=re.escape(message)):
        good.validate()  # and a changed field, on request


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        dict(pairs="title-body", split="test"),  # label-free pairs read no qrels: no clash with eval_split
        dict(split="test", eval_split=None),
        dict(layers=[0, 5], corpus_pairs=3, corpus_negatives=1, lr=1e-5, warmup=0.0, max_steps=1),
    ],
)
def test_good_values_are_accepted(overrides):
    config = FinetuneConfig(**REQUIRED, **overrides)
    assert all(getattr(config, k) == v for k, v in overrides.items())


def test_saved_settings_round_trip_through_json():
    config = FinetuneConfig(
        base=Path("models/ce"), out="~/runs/ce", layers=(0, 5), corpus_pairs=3, corpus_negatives=2, eval_split=None,
        lr=1e-5, seed=7, command="twostage finetune data", resume=True, save_steps=5, db="db",
    )  # fmt: skip
    saved = json.loads(json.dumps(config.settings()))
    assert set(saved) == {f.name for f in FIELDS.values() if f.metadata["role"] != RUN}
    assert not {"out", "resume", "save_steps", "db", "embedding_model"} & set(saved)  # where/how, not what
    run = dict(out=config.out, resume=True, save_steps=5, db="db")
    assert FinetuneConfig.from_settings({**saved, "dataset": "data", "loss": "BCE"}, **run) == config
    assert FinetuneConfig.from_settings(saved, out=config.out) != config  # the run fields are not in the settings
    assert (saved["base"], saved["layers"], config.out) == ("models/ce", [0, 5], Path("~/runs/ce").expanduser())


def test_resume_comparison_flags_must_match_fields_and_ignores_the_others():
    saved = FinetuneConfig(**REQUIRED).settings()
    for name, f in FIELDS.items():
        if f.metadata["role"] == RUN:
            continue
        changed = changed_settings(saved, {**saved, name: "changed"})
        assert changed == ([name] if f.metadata["role"] == MUST_MATCH else []), name
    assert changed_settings({**saved, "layer_ids": [0, 1]}, {**saved, "layer_ids": [0, 2]}) == ["layer_ids"]
    # The set --resume compared before FinetuneConfig existed.
    assert set(must_match_keys()) == {
        *("base", "split", "pairs", "negatives", "random_negatives", "mine_depth", "mine_skip", "recall"),
        *("max_queries", "corpus_pairs", "corpus_negatives", "seed", "layers", "layer_ids", "max_length"),
        *("batch_size", "lr", "epochs", "rounds"),
    }
    assert set(DERIVED_MUST_MATCH) <= set(must_match_keys())


def test_resume_check_raises_on_a_changed_seed_not_on_more_steps():
    config = FinetuneConfig(**REQUIRED)
    check_same_settings(config.settings(), dataclasses.replace(config, max_steps=50, eval_limit=5).settings())
    with pytest.raises(InvalidParameterError, match=re.escape("same settings as the interrupted run (seed: 0 -> 1)")):
        check_same_settings(config.settings(), dataclasses.replace(config, seed=1).settings())
    assert {f.metadata["role"] for f in FIELDS.values()} == {MUST_MATCH, MAY_DIFFER, RUN}


def _finetune_command():
    group = typer.main.get_command(app)
    return group.commands["finetune"]  # type: ignore[attr-defined]


def test_cli_options_are_exactly_the_config_fields():
    params = {p.name: p for p in _finetune_command().params if p.param_type_name == "option"}
    cli = {f.name for f in cli_fields()}
    assert set(params) == cli | {"json_out"}  # --json writes the CLI's output: not a setting
    # Library-only fields, each for a reason: warmup and eval_recall have no flag yet, the CLI records the command.
    assert set(FIELDS) - cli == {"warmup", "eval_recall", "command"}
    for name in cli:
        f, p = FIELDS[name], params[name]
        flags = list(f.metadata["flags"]) or [f"--{name.replace('_', '-')}"]
        assert p.opts + p.secondary_opts == flags, name
        assert p.required == (f.default is dataclasses.MISSING), name
        if not p.required:
            assert p.default == f.default, name
        if f.metadata["help"] is not None:  # None: the option --db/--embedding-model share with other commands
            assert p.help == f.metadata["help"], name


def _fake_finetune(calls, *, interrupted=False):
    def fake(dataset_dir, *, config, on_interrupt):
        calls.append((dataset_dir, config))
        if interrupted:
            on_interrupt(train_module.INTERRUPT_NOTICE)
        return FinetuneResult(
            out_dir=Path(config.out), settings={}, model_info={}, n_queries=2, n_pairs=8, n_positive=2, steps=3,
            interrupted=interrupted,
        )  # fmt: skip

    return fake


def test_cli_passes_every_value_through_to_the_config(tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(finetune_package, "finetune", _fake_finetune(calls))
    out = tmp_path / "ce"
    args = ["finetune", str(tmp_path), "--base", "models/ce", "-o", str(out), "--pairs", "title-body"]
    args += ["--layers", "0,5", "--eval-split", "none", "--seed", "3", "--lr", "1e-5", "--resume", "--max-steps", "7"]
    args += ["--db", str(tmp_path / "db"), "--embedding-model", "emb", "--epochs", "0.5", "--rounds", "2"]
    monkeypatch.setattr(sys, "argv", ["twostage", *args])
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    (dataset_dir, config), *more = calls
    assert dataset_dir == tmp_path and not more
    assert config == FinetuneConfig(
        base="models/ce", out=out, pairs="title-body", layers=[0, 5], eval_split=None, seed=3, lr=1e-5, resume=True,
        max_steps=7, db=tmp_path / "db", embedding_model="emb", epochs=0.5, rounds=2,
        command=shlex.join(["twostage", *args]),
    )  # fmt: skip
    assert f"model written to {out}" in result.output and f"twostage eval {tmp_path}" in result.output

    calls.clear()
    defaults = ["finetune", str(tmp_path), "--base", "models/ce", "--out", str(out)]
    assert CliRunner().invoke(app, defaults).exit_code == 0
    assert dataclasses.replace(calls[0][1], command=None) == FinetuneConfig(base="models/ce", out=out)


def test_cli_refuses_a_bad_value_before_training(tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(finetune_package, "finetune", _fake_finetune(calls))
    result = CliRunner().invoke(app, ["finetune", str(tmp_path), "--base", "b", "--out", "o", "--epochs", "0"])
    assert result.exit_code == 2 and "error: epochs must be > 0, got 0.0" in result.output and not calls


def test_cli_prints_the_ctrl_c_notice_and_exits_130(tmp_path, monkeypatch):
    monkeypatch.setattr(finetune_package, "finetune", _fake_finetune([], interrupted=True))
    result = CliRunner().invoke(app, ["finetune", str(tmp_path), "--base", "b", "--out", str(tmp_path / "ce")])
    assert result.exit_code == 130
    assert f"\n{train_module.INTERRUPT_NOTICE}\n" in result.output
    assert "re-run the same command with --resume" in result.output


def test_first_ctrl_c_notifies_and_asks_to_stop_the_second_aborts():
    notices: list[str] = []
    interrupt = train_module._Interrupt(notices.append)
    interrupt._handle(signal.SIGINT, None)
    assert interrupt.requested and notices == [train_module.INTERRUPT_NOTICE]
    with pytest.raises(KeyboardInterrupt):
        interrupt._handle(signal.SIGINT, None)
    assert len(notices) == 1


def test_library_default_logs_the_ctrl_c_notice(caplog):
    with caplog.at_level(logging.WARNING, logger=train_module.__name__):
        train_module._log_interrupt(train_module.INTERRUPT_NOTICE)
    assert [r.getMessage() for r in caplog.records] == [train_module.INTERRUPT_NOTICE]


class _Stop(Exception):
    """Raised by the replaced planning step: the test ends before any model is read."""


@pytest.fixture
def planned(monkeypatch):
    """finetune() up to its plan: the configs it would train with."""
    configs: list[FinetuneConfig] = []

    def plan(config, dataset_dir):
        configs.append(config)
        raise _Stop

    monkeypatch.setattr(train_module, "_require_training_deps", lambda: None)
    monkeypatch.setattr(train_module, "_plan", plan)
    return configs


def test_finetune_takes_a_config_keywords_or_both(planned, tmp_path):
    config = FinetuneConfig(**REQUIRED, seed=2)
    for kwargs, expected in [
        (dict(config=config), config),
        (dict(**REQUIRED, seed=2), config),
        (dict(config=config, seed=5, layers=3), dataclasses.replace(config, seed=5, layers=3)),
    ]:
        with pytest.raises(_Stop):
            finetune(tmp_path, **kwargs)
        assert planned.pop() == expected
    with pytest.raises(InvalidParameterError, match="epochs must be > 0"):
        finetune(tmp_path, config=config, epochs=0)
    with pytest.raises(TypeError, match="steps"):
        finetune(tmp_path, config=config, steps=3)  # not a setting: a typo must not pass silently
    with pytest.raises(TypeError, match="out"):
        finetune(tmp_path, base="models/ce")
    assert not planned


@pytest.mark.parametrize(
    ("architecture", "lr", "shrink_steps"), [("BertForSequenceClassification", 2e-5, 100), ("BertModel", 1e-4, None)]
)
def test_saved_settings_fill_in_what_the_config_implies(tmp_path, architecture, lr, shrink_steps):
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"architectures": [architecture], "num_hidden_layers": 6}))
    config = FinetuneConfig(base=base, out=tmp_path / "out", layers=4, pairs="title-body", recall="bm25")
    plain, cuts, settings = train_module._plan(config, tmp_path)
    assert plain == (architecture == "BertModel") and len(cuts) == (1 if plain else 2)
    # Exactly the keys the settings had before FinetuneConfig: the config's values, with what they imply filled in.
    assert set(settings) == {
        *("dataset", "base", "split", "pairs", "negatives", "random_negatives", "mine_depth", "mine_skip", "recall"),
        *("max_queries", "corpus_pairs", "corpus_negatives", "seed", "layers", "layer_ids", "base_layers"),
        *("shrink_steps", "max_length", "batch_size", "lr", "warmup", "epochs", "max_steps", "loss", "rounds"),
        *("eval_split", "eval_recall", "eval_limit", "eval_max_queries", "command"),
    }
    assert (settings["lr"], settings["shrink_steps"], settings["base_layers"]) == (lr, shrink_steps, 6)
    assert (settings["split"], settings["eval_recall"], settings["dataset"]) == (None, "bm25", str(tmp_path))
