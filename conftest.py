"""Repository-wide pytest set-up: point the package at ../shared when nothing else is configured, so that
`python -m pytest` works as written from a fresh clone (notebooks executed by nbmake inherit this
environment too). Product code never reads ../shared; only the tests do, through here and tests/conftest.py.
"""

from __future__ import annotations

import os
from pathlib import Path

SHARED = Path(__file__).resolve().parent.parent / "shared"
DEFAULTS = {
    "TWOSTAGE_RERANK_MODEL": SHARED / "models" / "minilm-l6-scifact-ce",
    "TWOSTAGE_SCIFACT_DIR": SHARED / "data" / "beir" / "scifact",
}


def pytest_configure(config) -> None:
    for var, path in DEFAULTS.items():
        if not os.environ.get(var) and path.exists():
            os.environ[var] = str(path)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download; fail fast instead of retrying
