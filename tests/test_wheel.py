"""The package as users install it: a built wheel (not the editable install) holds the sample corpus, the PEP 561
marker and the license, and `twostage demo` runs from it in a fresh virtual environment.

The wheel is built from a copy of the source tree (setuptools writes build/ and *.egg-info next to the sources,
and a stale build/ could leak files into the wheel). The venv uses --system-site-packages so the heavy
dependencies come from the current environment; only our package is installed into it, from the wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "twostage_integrations"
# Never copied into the build tree: VCS data, caches and previous build output.
IGNORE = shutil.ignore_patterns(
    ".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis", ".ipynb_checkpoints"
)


def _clean_env(**extra: str) -> dict[str, str]:
    """The current environment without PYTHONPATH (which would import the source tree instead of the wheel)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(extra)
    return env


def _run(args: list[str], *, cwd: Path, env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Build the wheel offline (no index, no build isolation: setuptools and wheel come from this environment)."""
    root = tmp_path_factory.mktemp("wheel")
    src, out = root / "src", root / "dist"
    shutil.copytree(REPO, src, ignore=IGNORE)
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(out)]
    _run([*cmd, str(src)], cwd=root, env=_clean_env())
    wheels = list(out.glob("twostage_integrations-*.whl"))
    assert len(wheels) == 1, f"expected one wheel in {out}, found {wheels}"
    return wheels[0]


def test_wheel_holds_corpus_typed_marker_and_license(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        corpus = [n for n in names if n.startswith(f"{PACKAGE}/data/") and n.endswith(".jsonl")]
        assert corpus == [f"{PACKAGE}/data/sample_corpus.jsonl"]
        assert zf.read(corpus[0]) == (REPO / PACKAGE / "data" / "sample_corpus.jsonl").read_bytes()
        assert f"{PACKAGE}/py.typed" in names
        licenses = [n for n in names if ".dist-info/" in n and Path(n).name == "LICENSE"]
        assert len(licenses) == 1, names
        assert zf.read(licenses[0]) == (REPO / "LICENSE").read_bytes()
        metadata = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "Apache License" in (REPO / "LICENSE").read_text() and "Version 2.0" in (REPO / "LICENSE").read_text()
    assert "License-Expression: Apache-2.0" in metadata
    assert "Project-URL: Homepage, https://" in metadata
    # only our package (and its metadata) ships: no tests/, scripts/ or benchmarks/ at the top level
    tops = {n.split("/", 1)[0] for n in names}
    assert tops == {PACKAGE, "-".join(wheel.name.split("-")[:2]) + ".dist-info"}


def test_demo_runs_from_the_installed_wheel(wheel, tmp_path, rerank_model_path):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], cwd=tmp_path, env=_clean_env())
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = bindir / ("python.exe" if os.name == "nt" else "python")
    env = _clean_env(
        TWOSTAGE_RERANK_MODEL=rerank_model_path,
        HF_HUB_OFFLINE="1",
        TWOSTAGE_DB=str(tmp_path / "db"),
        COLUMNS="200",
    )
    _run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)], cwd=tmp_path, env=env)

    # cwd is a temp dir and PYTHONPATH is unset, so nothing can import the source tree by accident
    where = _run(
        [
            str(python),
            "-c",
            "import twostage_integrations as t, twostage_integrations.demo as d; "
            "print(t.__file__); print(d.sample_corpus_path())",
        ],
        cwd=tmp_path,
        env=env,
    ).stdout.split()
    venv_root = venv.resolve()
    for path in where:
        assert Path(path).resolve().is_relative_to(venv_root), f"{path} is not inside {venv_root}"
        assert not Path(path).resolve().is_relative_to(REPO), f"{path} comes from the source tree"

    script = bindir / ("twostage.exe" if os.name == "nt" else "twostage")
    assert script.exists(), "the wheel's console script was not installed"
    out = _run([str(script), "demo", "--top-k", "3"], cwd=tmp_path, env=env).stdout
    with open(REPO / PACKAGE / "data" / "sample_corpus.jsonl", encoding="utf-8") as f:
        passages = sum(1 for line in f if line.strip())
    assert f"{passages} added" in out
    assert out.count("after rerank") == 6 and "stage 1 only" in out
    assert "subprocess" in out  # results for the first demo question, from the bundled Python docs
