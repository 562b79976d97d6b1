"""Capacity at a million passages: ingest, index sizes, BM25 build/load, cold and warm query latency, peak RSS.

    python benchmarks/scale_1m.py                       # 1,000,000 passages (hours of embedding on a CPU)
    python benchmarks/scale_1m.py --passages 20000      # a quick run of the same steps

Run it from a checkout with its dependencies installed (``pip install -e ".[eval,onnx]"``), with the models
reachable (``TWOSTAGE_RERANK_MODEL``/``TWOSTAGE_EMBEDDING_MODEL`` or the hub). Steps, each whole-process figure
taken from ``/usr/bin/time -v`` around a subprocess:

1. corpus: N synthetic passages written to ``WORKDIR/corpus.jsonl``: 2-4 sentences recombined from SciFact
   (``TWOSTAGE_SCIFACT_DIR``) or the bundled sample corpus, 1-3 sentences (< 400 characters) each, seeded
   (``--seed``), ids ``p0000000``...
2. ingest: ``twostage ingest corpus.jsonl -c scale --db WORKDIR/chroma`` (passages/s, peak RSS).
3. bm25: the BM25 index built from the passages in Chroma (corpus read + build + save), then loaded by a new
   process (corpus read + load); each with its peak RSS.
4. cold: one fresh ``twostage query`` process per recall kind (dense, bm25, hybrid), with and without the
   reranker, at limit 20: wall time and peak RSS of the whole process.
5. warm: one process per recall kind and reranker on/off, searching ``--queries`` queries at limits 20 and 50:
   p50/p95 latency, CPU seconds per query (-> queries/s per core) and peak RSS.
6. sizes on disk (Chroma folder, BM25 index folder), then ``OUT.json`` and ``OUT.md``.

Restartable: finished steps are kept in ``WORKDIR/state.json`` and skipped when the script runs again with the
same ``--workdir`` (``--redo STEP`` runs one again); an interrupted ingest resumes, since ``twostage ingest``
skips passages already stored. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
COLLECTION = "scale"
KINDS = ("dense", "bm25", "hybrid")
LIMITS = (20, 50)
TOP_K = 10
STEPS = ("corpus", "ingest", "bm25", "cold", "warm")
# This checkout's CLI, whatever `twostage` is on PATH.
CLI = [sys.executable, "-c", "from twostage_integrations.cli import app; app()"]
MAX_CHARS = 400  # passage length cap: short passages, well under the cross-encoder's token limit
SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9])")


def log(message: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- 1. corpus -------------------------------------------------------------------------------------------------
def source_texts() -> tuple[str, list[str], list[str]]:
    """(source name, passages to cut into sentences, queries): SciFact when TWOSTAGE_SCIFACT_DIR is set."""
    scifact = os.environ.get("TWOSTAGE_SCIFACT_DIR")
    if scifact:
        folder = Path(scifact)
        texts = [json.loads(line)["text"] for line in (folder / "corpus.jsonl").open(encoding="utf-8")]
        queries = [json.loads(line)["text"] for line in (folder / "queries.jsonl").open(encoding="utf-8")]
        return f"scifact:{folder}", texts, queries
    bundled = REPO / "twostage_integrations" / "data" / "sample_corpus.jsonl"
    texts = [json.loads(line)["text"] for line in bundled.open(encoding="utf-8") if line.strip()]
    return "sample_corpus", texts, []


def sentences_of(texts: list[str]) -> list[str]:
    out = []
    for text in texts:
        for sentence in SENTENCE.split(" ".join(text.split())):
            if 30 <= len(sentence) <= 300:
                out.append(sentence)
    return out


def make_queries(sentences: list[str], given: list[str], n: int, seed: int) -> list[str]:
    """``n`` queries: the dataset's own when it has them, else 5-9 consecutive words of random sentences."""
    rng = random.Random(seed + 1)
    if given:
        return rng.sample(given, min(n, len(given)))
    queries = []
    for sentence in rng.sample(sentences, n):
        words = sentence.split()
        start = rng.randrange(max(1, len(words) - 5))
        queries.append(" ".join(words[start : start + rng.randint(5, 9)]))
    return queries


def write_corpus(path: Path, n: int, seed: int) -> dict[str, Any]:
    """Stream ``n`` passages to ``path`` (via a .part file renamed at the end, so a half file is never used)."""
    source, texts, _ = source_texts()
    sentences = sentences_of(texts)
    rng = random.Random(seed)
    part = path.with_suffix(".part")
    chars = 0
    with part.open("w", encoding="utf-8") as out:
        for i in range(n):
            text = rng.choice(sentences)
            for _ in range(rng.randint(0, 2)):  # 1-3 sentences, short: most stored passages are a few lines
                more = rng.choice(sentences)
                if len(text) + len(more) >= MAX_CHARS:
                    break
                text += " " + more
            chars += len(text)
            out.write(json.dumps({"id": f"p{i:07d}", "text": text}, ensure_ascii=False) + "\n")
            if (i + 1) % 100_000 == 0:
                log(f"corpus: {i + 1:,} / {n:,} passages written")
    part.rename(path)
    return {
        "source": source,
        "sentences": len(sentences),
        "mean_chars": chars / max(n, 1),
        "bytes": path.stat().st_size,
    }


# -- subprocesses under /usr/bin/time -v -----------------------------------------------------------------------
def child_env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}


def parse_time_v(text: str) -> dict[str, float]:
    """Wall, user, system seconds and peak RSS (MiB) from ``/usr/bin/time -v`` output."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        key, _, value = line.strip().rpartition(": ")
        if key == "Maximum resident set size (kbytes)":
            values["peak_rss_mib"] = int(value) / 1024
        elif key.startswith("Elapsed (wall clock) time"):
            seconds = 0.0
            for part in value.split(":"):
                seconds = seconds * 60 + float(part)
            values["wall_s"] = seconds
        elif key == "User time (seconds)":
            values["user_s"] = float(value)
        elif key == "System time (seconds)":
            values["sys_s"] = float(value)
    return values


def timed(argv: list[str], workdir: Path, label: str, *, capture: bool = True) -> tuple[dict[str, float], str]:
    """Run ``argv`` under ``/usr/bin/time -v``: (its figures, its stdout). stderr passes through (progress)."""
    report = workdir / f"time_{label}.txt"
    proc = subprocess.run(
        ["/usr/bin/time", "-v", "-o", str(report), *argv],
        env=child_env(),
        stdout=subprocess.PIPE if capture else None,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{label}: exit {proc.returncode}: {' '.join(argv)}")
    return parse_time_v(report.read_text()), proc.stdout or ""


def worker(task: str, workdir: Path, **params: Any) -> list[str]:
    spec = json.dumps({"task": task, "workdir": str(workdir), **params})
    return [sys.executable, str(Path(__file__).resolve()), "--worker", spec]


def last_json(stdout: str) -> dict[str, Any]:
    return json.loads(stdout.strip().splitlines()[-1])


# -- workers (run in their own process) ------------------------------------------------------------------------
def vm_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    from twostage_integrations import ChromaRecall

    chroma = ChromaRecall(COLLECTION, path=Path(spec["workdir"]) / "chroma", progress=False)
    if spec["task"] == "count":  # nothing stored yet is 0, not an error
        from twostage_integrations.errors import CollectionNotFoundError

        try:
            return {"count": chroma.count()}
        except CollectionNotFoundError:
            return {"count": 0}
    if spec["task"] == "preflight":  # both models load: found now, not after hours of ingest
        from twostage_integrations import CrossEncoderReranker

        chroma.embedder.embed_query("preflight")
        CrossEncoderReranker().score("preflight", ["a passage"])
        return {"ok": True}
    if spec["task"] == "bm25":
        return bm25_worker(chroma, fresh=spec["fresh"])
    return warm_worker(chroma, spec["kind"], spec["rerank"], spec["queries"])


def bm25_worker(chroma: Any, *, fresh: bool) -> dict[str, Any]:
    """Time what a BM25 snapshot costs, step by step as ``BM25Recall`` takes them (its private steps, called
    here one by one): read every passage from Chroma, fingerprint them, then build (and save) or load the index.
    """
    from twostage_integrations.recall.bm25 import BM25Recall

    bm25 = BM25Recall(chroma)
    if fresh and bm25.index_dir.exists():
        shutil.rmtree(bm25.index_dir)
    version = chroma.version()
    t0 = time.perf_counter()
    ids, texts, metas = bm25._read_corpus()
    t1 = time.perf_counter()
    fingerprint = bm25._fingerprint(ids, texts)
    t2 = time.perf_counter()
    bm25._load_or_build(ids, texts, metas, fingerprint, version)
    t3 = time.perf_counter()
    return {
        "passages": len(ids),
        "read_s": t1 - t0,
        "fingerprint_s": t2 - t1,
        "build_or_load_s": t3 - t2,
        "index_s": t3 - t0,
    }


def warm_worker(chroma: Any, kind: str, rerank: bool, queries: list[str]) -> dict[str, Any]:
    """Models loaded first (RSS noted), then the index's first search, then every query at each limit."""
    from twostage_integrations import CrossEncoderReranker, TwoStagePipeline
    from twostage_integrations.recall import recall_by_kind

    reranker = CrossEncoderReranker() if rerank else None
    if kind != "bm25":  # BM25 alone never embeds
        chroma.embedder.embed_query(queries[0])
    if reranker is not None:
        reranker.score(queries[0], [queries[-1]] * max(LIMITS))
    models_rss = vm_kib("VmRSS") / 1024
    recall = recall_by_kind(kind, chroma)
    t0 = time.perf_counter()
    recall.search(queries[0], max(LIMITS))
    out: dict[str, Any] = {"models_rss_mib": models_rss, "first_search_s": time.perf_counter() - t0, "limits": {}}
    for limit in LIMITS:
        pipe = TwoStagePipeline(recall, reranker, limit=limit, top_k=TOP_K)
        pipe.search(queries[0])  # this batch shape once before timing
        walls = []
        cpu0 = time.process_time()  # every thread of the process: ONNX Runtime runs one call across all cores
        for query in queries:
            t0 = time.perf_counter()
            pipe.search(query)
            walls.append(time.perf_counter() - t0)
        cpu = (time.process_time() - cpu0) / len(queries)
        out["limits"][str(limit)] = {
            "queries": len(queries),
            "p50_ms": 1000 * statistics.median(walls),
            "p95_ms": 1000 * percentile(walls, 0.95),
            "cpu_s_per_query": cpu,
            "queries_per_core_s": 1 / cpu if cpu > 0 else None,
        }
    out["peak_rss_mib_in_process"] = vm_kib("VmHWM") / 1024
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# -- steps -----------------------------------------------------------------------------------------------------
def step_corpus(args: argparse.Namespace, state: dict[str, Any]) -> dict[str, Any]:
    path = args.workdir / "corpus.jsonl"
    if path.exists():
        path.unlink()
    t0 = time.perf_counter()
    info = write_corpus(path, args.passages, args.seed)
    log(f"corpus: {args.passages:,} passages from {info['source']} ({info['bytes'] / 2**20:.0f} MiB)")
    return {**info, "passages": args.passages, "seed": args.seed, "wall_s": time.perf_counter() - t0}


def step_ingest(args: argparse.Namespace, state: dict[str, Any]) -> dict[str, Any]:
    before = last_json(subprocess.run(worker("count", args.workdir), env=child_env(), **PIPE).stdout)["count"]
    log(f"ingest: {before:,} passages already stored; `twostage ingest` of the rest (its progress bar follows)")
    argv = [*CLI, "ingest", str(args.workdir / "corpus.jsonl"), "-c", COLLECTION, "--db", str(args.workdir / "chroma")]
    figures, _ = timed(argv, args.workdir, "ingest", capture=False)
    after = last_json(subprocess.run(worker("count", args.workdir), env=child_env(), **PIPE).stdout)["count"]
    added = after - before
    rate = added / figures["wall_s"] if figures["wall_s"] else None
    cpu = figures["user_s"] + figures["sys_s"]
    per_cpu = added / cpu if cpu else None  # steadier than the rate on a shared machine
    log(f"ingest: {added:,} added in {figures['wall_s']:.0f} s ({rate or 0:.0f} passages/s), {after:,} stored")
    out = {"before": before, "after": after, "added": added, "passages_per_s": rate, "passages_per_cpu_s": per_cpu}
    return {**out, "resumed": before > 0, **figures}


PIPE: dict[str, Any] = {"stdout": subprocess.PIPE, "text": True, "check": True}


def step_bm25(args: argparse.Namespace, state: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for phase, fresh in (("build", True), ("load", False)):
        figures, stdout = timed(worker("bm25", args.workdir, fresh=fresh), args.workdir, f"bm25_{phase}")
        out[phase] = {**last_json(stdout), **figures}
        log(f"bm25 {phase}: {bm25_steps(out[phase])}, peak RSS {figures['peak_rss_mib']:.0f} MiB")
    return out


def bm25_steps(row: dict[str, Any]) -> str:
    return (
        f"{row['index_s']:.1f} s = read from Chroma {row['read_s']:.1f} s + fingerprint {row['fingerprint_s']:.1f} s"
        f" + build or load {row['build_or_load_s']:.1f} s"
    )


def step_cold(args: argparse.Namespace, state: dict[str, Any]) -> dict[str, Any]:
    query = state["queries"][0]
    out = {}
    for kind in KINDS:
        for rerank in (False, True):
            label = f"{kind}{'+rerank' if rerank else ''}"
            argv = [*CLI, "query", query, "-c", COLLECTION, "--db", str(args.workdir / "chroma"), "--recall", kind]
            argv += ["--limit", str(LIMITS[0]), "--top-k", str(TOP_K), "--json"] + ([] if rerank else ["--no-rerank"])
            figures, _ = timed(argv, args.workdir, f"cold_{label}")
            out[label] = figures
            log(f"cold {label}: {figures['wall_s']:.2f} s, peak RSS {figures['peak_rss_mib']:.0f} MiB")
    return out


def step_warm(args: argparse.Namespace, state: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for kind in KINDS:
        for rerank in (False, True):
            label = f"{kind}{'+rerank' if rerank else ''}"
            argv = worker("warm", args.workdir, kind=kind, rerank=rerank, queries=state["queries"])
            figures, stdout = timed(argv, args.workdir, f"warm_{label}")
            out[label] = {**last_json(stdout), **figures}
            lat = ", ".join(
                f"limit {k}: p50 {v['p50_ms']:.0f} ms p95 {v['p95_ms']:.0f} ms" for k, v in out[label]["limits"].items()
            )
            log(f"warm {label}: {lat}; peak RSS {figures['peak_rss_mib']:.0f} MiB")
    return out


def du(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def sizes(workdir: Path) -> dict[str, int]:
    chroma = workdir / "chroma"
    bm25 = du(chroma / "bm25")
    return {"chroma_bytes": du(chroma) - bm25, "bm25_bytes": bm25, "corpus_jsonl_bytes": du(workdir / "corpus.jsonl")}


# -- report ----------------------------------------------------------------------------------------------------
def capacity(state: dict[str, Any]) -> dict[str, Any]:
    """Per-GiB and per-core figures derived from the measurements (see docs/deployment.md#capacity).

    RAM per passage is what a recall-only process holds above its loaded models (peak RSS minus the RSS once
    the models were loaded, before the index): the index and passages. Rerank rows add the cross-encoder's
    working memory, so they get no per-passage figure."""
    n, gib = state["ingest"]["after"], 2**30
    size = state["sizes"]
    rows = {}
    for label, warm in state["warm"].items():
        above = warm["peak_rss_mib"] - warm["models_rss_mib"]
        recall_only = "+rerank" not in label
        rows[label] = {
            "peak_rss_mib": warm["peak_rss_mib"],
            "rss_above_models_mib": above,
            "passages_per_gib_ram": n / (above / 1024) if recall_only and above > 0 else None,
            **{f"qps_per_core_{k}": v["queries_per_core_s"] for k, v in warm["limits"].items()},
            **{f"p50_ms_{k}": v["p50_ms"] for k, v in warm["limits"].items()},
            **{f"p95_ms_{k}": v["p95_ms"] for k, v in warm["limits"].items()},
            "cold_s": state["cold"][label]["wall_s"],
            "cold_cpu_s": state["cold"][label]["user_s"] + state["cold"][label]["sys_s"],
            "cold_peak_rss_mib": state["cold"][label]["peak_rss_mib"],
        }
    return {
        "passages": n,
        "passages_per_gib_disk_dense": n / (size["chroma_bytes"] / gib),
        "passages_per_gib_disk_with_bm25": n / ((size["chroma_bytes"] + size["bm25_bytes"]) / gib),
        "configs": rows,
    }


def ms(value: float) -> str:
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"


def markdown(state: dict[str, Any]) -> str:
    cap, ing, bm, size = state["capacity"], state["ingest"], state["bm25"], state["sizes"]
    load = ", ".join(f"{x:.1f}" for x in state["machine"]["load_avg_at_start"])
    resumed = " (a resumed run: the rate of its last part)" if ing["resumed"] else ""
    lines = [
        f"# twostage at {cap['passages']:,} passages ({state['machine']['cpu']}, {state['machine']['cores']} cores, "
        f"load average {load} at the start)",
        "",
        f"Command: `{state['command']}`",
        "",
        f"- ingest: {ing['passages_per_s']:.0f} passages/s ({ing['passages_per_cpu_s']:.0f} per CPU-second), "
        f"peak RSS {ing['peak_rss_mib']:.0f} MiB{resumed}",
        f"- disk: Chroma {size['chroma_bytes'] / 2**20:.0f} MiB, BM25 index {size['bm25_bytes'] / 2**20:.0f} MiB; "
        f"{cap['passages_per_gib_disk_dense']:,.0f} passages per GiB (dense), "
        f"{cap['passages_per_gib_disk_with_bm25']:,.0f} with the BM25 index",
        f"- BM25 index, first build: {bm25_steps(bm['build'])}, peak RSS {bm['build']['peak_rss_mib']:.0f} MiB",
        f"- BM25 index, load by a new process: {bm25_steps(bm['load'])}, peak RSS {bm['load']['peak_rss_mib']:.0f} MiB",
        "",
        "| recall | rerank | cold query s wall / CPU (peak RSS MiB) | p50/p95 ms @20 | p50/p95 ms @50 | "
        "queries/s/core @20 | queries/s/core @50 | warm peak RSS MiB | RSS above models MiB | passages per GiB RAM |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, row in cap["configs"].items():
        kind, rerank = label.split("+")[0], "yes" if "+rerank" in label else "no"
        per_gib = f"{row['passages_per_gib_ram']:,.0f}" if row["passages_per_gib_ram"] else "-"
        lines.append(
            f"| {kind} | {rerank} | {row['cold_s']:.2f} / {row['cold_cpu_s']:.2f} ({row['cold_peak_rss_mib']:.0f}) | "
            f"{ms(row['p50_ms_20'])}/{ms(row['p95_ms_20'])} | {ms(row['p50_ms_50'])}/{ms(row['p95_ms_50'])} | "
            f"{row['qps_per_core_20']:.1f} | {row['qps_per_core_50']:.1f} | {row['peak_rss_mib']:.0f} | "
            f"{row['rss_above_models_mib']:.0f} | {per_gib} |"
        )
    return "\n".join(lines) + "\n"


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    try:
        for line in subprocess.run(["lscpu"], **PIPE).stdout.splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass  # no lscpu: platform's answer stays
    return {"cpu": cpu, "cores": os.cpu_count(), "load_avg_at_start": os.getloadavg()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--passages", type=int, default=1_000_000)
    p.add_argument("--workdir", type=Path, help="default ~/.cache/twostage/scale/<passages>")
    p.add_argument("--out", type=Path, help="OUT.json and OUT.md; default benchmarks/results/scale_<passages>")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--queries", type=int, default=30, help="warm queries per configuration and limit")
    p.add_argument("--redo", action="append", choices=STEPS, default=[], help="run this finished step again")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(run_worker(json.loads(args.worker))))
        return
    if not Path("/usr/bin/time").exists():
        raise SystemExit("needs /usr/bin/time (GNU time: apt-get install time) for whole-process figures")
    args.workdir = (args.workdir or Path.home() / ".cache" / "twostage" / "scale" / str(args.passages)).resolve()
    args.out = args.out or REPO / "benchmarks" / "results" / f"scale_{args.passages}"
    args.workdir.mkdir(parents=True, exist_ok=True)
    state_file = args.workdir / "state.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    if state.get("corpus", {}).get("passages") not in (None, args.passages):
        raise SystemExit(f"{args.workdir} holds a {state['corpus']['passages']:,}-passage run; pass another --workdir")
    state["command"] = "python benchmarks/scale_1m.py " + " ".join(sys.argv[1:])
    state.setdefault("machine", machine())  # where the run started; a resumed run keeps it
    if "queries" not in state:
        source, texts, given = source_texts()
        state["queries"] = make_queries(sentences_of(texts), given, args.queries, args.seed)
    if not all(name in state for name in STEPS):
        log("preflight: loading the embedding model and the cross-encoder once")
        if subprocess.run(worker("preflight", args.workdir), env=child_env()).returncode != 0:
            raise SystemExit("preflight: a model did not load (the error above); set TWOSTAGE_RERANK_MODEL etc.")
    for name, step in zip(STEPS, (step_corpus, step_ingest, step_bm25, step_cold, step_warm), strict=True):
        if name in state and name not in args.redo:
            log(f"{name}: done in an earlier run (--redo {name} to run it again)")
            continue
        log(f"{name}: start")
        state[name] = step(args, state)
        state_file.write_text(json.dumps(state, indent=1))
    state["sizes"] = sizes(args.workdir)
    state["capacity"] = capacity(state)
    state_file.write_text(json.dumps(state, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(state, indent=1))
    args.out.with_suffix(".md").write_text(markdown(state))
    print(markdown(state))


if __name__ == "__main__":
    main()
