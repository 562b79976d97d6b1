"""Build twostage_integrations/data/sample_corpus.jsonl from the Python standard library's own docs.

The demo needs a few hundred real passages that the package may redistribute. CPython's docstrings and
its language-reference topics (``pydoc_data.topics``) are real, well-written technical text under the
PSF License, which permits redistribution with its notice (see data/SAMPLE_CORPUS.md).

Run with the Python version you want to snapshot: ``python scripts/build_sample_corpus.py``.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import sys
from pathlib import Path

MODULES = [
    "argparse",
    "asyncio",
    "base64",
    "bisect",
    "calendar",
    "collections",
    "concurrent.futures",
    "contextlib",
    "copy",
    "csv",
    "datetime",
    "decimal",
    "difflib",
    "email",
    "enum",
    "fnmatch",
    "fractions",
    "functools",
    "glob",
    "gzip",
    "hashlib",
    "heapq",
    "hmac",
    "html",
    "http.client",
    "http.server",
    "itertools",
    "json",
    "logging",
    "math",
    "multiprocessing",
    "os",
    "os.path",
    "pathlib",
    "pickle",
    "random",
    "re",
    "secrets",
    "shelve",
    "shlex",
    "shutil",
    "signal",
    "smtplib",
    "socket",
    "sqlite3",
    "ssl",
    "statistics",
    "string",
    "struct",
    "subprocess",
    "tarfile",
    "tempfile",
    "textwrap",
    "threading",
    "time",
    "timeit",
    "tomllib",
    "unittest",
    "urllib.parse",
    "urllib.request",
    "uuid",
    "venv",
    "warnings",
    "weakref",
    "zipfile",
    "zlib",
]
MAX_CHARS = 900
MIN_CHARS = 160


def clean(doc: str) -> str:
    doc = inspect.cleandoc(doc)
    paras = [" ".join(p.split()) for p in re.split(r"\n\s*\n", doc)]
    text = ""
    for p in paras:
        if len(text) + len(p) > MAX_CHARS:
            break
        text = f"{text}\n\n{p}" if text else p
    return text or paras[0][:MAX_CHARS]


def passages():
    seen = set()
    for name in MODULES:
        mod = importlib.import_module(name)
        if mod.__doc__ and len(mod.__doc__) >= MIN_CHARS:
            yield name, name, "module", clean(mod.__doc__)
        for attr, obj in sorted(vars(mod).items()):
            if attr.startswith("_") or (getattr(obj, "__module__", None) or name).split(".")[0] != name.split(".")[0]:
                continue
            if not (inspect.isfunction(obj) or inspect.isclass(obj) or inspect.isbuiltin(obj)):
                continue
            doc = inspect.getdoc(obj) or ""
            if len(doc) < MIN_CHARS:
                continue
            text = clean(doc)
            if text in seen:
                continue
            seen.add(text)
            yield f"{name}.{attr}", name, "class" if inspect.isclass(obj) else "function", text
    from pydoc_data.topics import topics

    for topic, doc in sorted(topics.items()):
        if len(doc) >= MIN_CHARS:
            yield f"reference:{topic}", "language-reference", "topic", clean(doc)


def main() -> None:
    out = Path(__file__).resolve().parents[1] / "twostage_integrations" / "data" / "sample_corpus.jsonl"
    rows = 0
    with open(out, "w", encoding="utf-8") as f:
        for doc_id, module, kind, text in passages():
            title = doc_id.split(":")[-1]
            record = {"id": doc_id, "title": title, "module": module, "kind": kind, "text": f"{title}: {text}"}
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            rows += 1
    print(f"wrote {rows} passages to {out} (Python {sys.version.split()[0]})")


if __name__ == "__main__":
    main()
