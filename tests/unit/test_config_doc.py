"""docs/configuration.md and twostage_integrations/config.py list the same environment variables, and the
package reads no variable that is missing from them."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from typer.main import get_group

from twostage_integrations import config
from twostage_integrations.cli import app
from twostage_integrations.rerank import cohere, rerankers, voyage

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "twostage_integrations"
DOC = REPO / "docs" / "configuration.md"
SOURCES = sorted(PACKAGE.rglob("*.py"))


def doc_table(text: str) -> list[tuple[str, str, str]]:
    """The rows of the Markdown table whose header is ``| variable | default | meaning |``."""
    lines = [line.strip() for line in text.splitlines()]
    start = lines.index("| variable | default | meaning |")
    assert re.fullmatch(r"\|(\s*:?-+:?\s*\|){3}", lines[start + 1]), lines[start + 1]
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert len(cells) == 3, line
        name, default, meaning = cells
        assert name.startswith("`") and name.endswith("`"), f"variable names are code: {line}"
        rows.append((name.strip("`"), default, meaning))
    return rows


def test_doc_table_equals_config_table():
    expected = [(s.name, s.default, s.help) for s in config.SETTINGS]
    assert doc_table(DOC.read_text(encoding="utf-8")) == expected


def test_doc_table_parser_sees_a_changed_default():
    changed = DOC.read_text(encoding="utf-8").replace(
        config.TWOSTAGE_RERANK_MODEL.default, "cross-encoder/ms-marco-MiniLM-L-12-v2", 1
    )
    rows = dict((name, default) for name, default, _ in doc_table(changed))
    assert rows["TWOSTAGE_RERANK_MODEL"] != config.TWOSTAGE_RERANK_MODEL.default


def test_table_is_well_formed():
    names = [s.name for s in config.SETTINGS]
    assert len(names) == len(set(names)) == len(config.SETTINGS_BY_NAME)
    for s in config.SETTINGS:
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*", s.name), s.name
        assert s.default.strip() and s.help.strip(), s
        assert "|" not in s.default + s.help and "\n" not in s.default + s.help, f"breaks the Markdown table: {s}"


def test_every_twostage_variable_in_the_source_is_in_the_table():
    pattern = re.compile(r"\bTWOSTAGE_[A-Z][A-Z0-9_]*")
    found = {(m.group(), path.relative_to(REPO)) for path in SOURCES for m in pattern.finditer(path.read_text())}
    missing = sorted((name, str(path)) for name, path in found if name not in config.SETTINGS_BY_NAME)
    assert not missing, f"add these to config.py and docs/configuration.md: {missing}"
    assert {name for name, _ in found} >= {s.name for s in config.SETTINGS if s.name.startswith("TWOSTAGE_")}


def test_api_key_and_base_url_variables_are_in_the_table():
    names = [*cohere.API_KEY_ENVS, *cohere.BASE_URL_ENVS, *voyage.API_KEY_ENVS, *voyage.BASE_URL_ENVS]
    names += [name for envs in rerankers.API_KEY_ENVS.values() for name in envs]
    assert not [name for name in names if name not in config.SETTINGS_BY_NAME]


def test_cli_envvars_are_in_the_table():
    group = get_group(app)
    envvars = {p.envvar for command in [group, *group.commands.values()] for p in command.params if p.envvar}
    assert envvars == {config.TWOSTAGE_DEBUG.name, config.TWOSTAGE_SERVE_API_KEY.name}


def raw_environment_reads(source: str) -> list[int]:
    """Lines that read the environment without config.py: os.environ.get / [...] / ``in``, os.getenv, or
    importing environ/getenv. Writes (``os.environ[k] = v``, ``setdefault``) are allowed."""
    tree = ast.parse(source)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            lines += [node.lineno for alias in node.names if alias.name in ("environ", "getenv", "getenvb")]
        if not (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os"):
            continue
        parent = parents.get(node)
        if node.attr in ("getenv", "getenvb"):
            lines.append(node.lineno)
        elif node.attr == "environ":
            read = (
                (isinstance(parent, ast.Attribute) and parent.attr != "setdefault")
                or (isinstance(parent, ast.Subscript) and isinstance(parent.ctx, ast.Load))
                or isinstance(parent, ast.Compare)
            )
            if read:
                lines.append(node.lineno)
    return lines


@pytest.mark.parametrize(
    ("source", "lines"),
    [
        ('import os\nx = os.environ.get("A")\n', [2]),
        ('import os\nx = os.environ["A"]\n', [2]),
        ('import os\nx = "A" in os.environ\n', [2]),
        ('import os\nx = os.getenv("A")\n', [2]),
        ("from os import environ\n", [1]),
        ('import os\nos.environ["A"] = "1"\nos.environ.setdefault("B", "1")\n', []),
    ],
)
def test_raw_read_finder(source, lines):
    assert raw_environment_reads(source) == lines


def test_the_library_reads_the_environment_only_through_config():
    offenders = {
        str(path.relative_to(REPO)): found
        for path in SOURCES
        if path != PACKAGE / "config.py" and (found := raw_environment_reads(path.read_text()))
    }
    assert not offenders, f"read these through twostage_integrations.config (add the variable there): {offenders}"


def test_setting_reads_the_environment(monkeypatch):
    monkeypatch.setenv("TWOSTAGE_DB", "/tmp/somewhere")
    monkeypatch.delenv("CO_API_KEY", raising=False)
    monkeypatch.setenv("COHERE_API_KEY", "k2")
    assert config.TWOSTAGE_DB.value() == config.get("TWOSTAGE_DB") == "/tmp/somewhere"
    assert config.first_set(["CO_API_KEY", "COHERE_API_KEY"]) == "k2"
    monkeypatch.setenv("CO_API_KEY", "")  # empty counts as unset
    assert config.first_set(["CO_API_KEY", "COHERE_API_KEY"]) == "k2"
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    assert config.HF_ENDPOINT.value(config.DEFAULT_HF_ENDPOINT) == config.HF_ENDPOINT.default
    with pytest.raises(KeyError):
        config.get("NOT_A_SETTING")
