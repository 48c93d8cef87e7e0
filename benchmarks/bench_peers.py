"""Our engines per precision against sentence-transformers' fastest backends and fastembed.

The peers run in their own virtual environment, which this benchmark creates under
``benchmarks/.cache/peers-venv`` (sentence-transformers' ONNX / OpenVINO extras pin other
``transformers`` releases than ours; the project's environment is never touched). Our engines
and theirs are served by the same worker (``peer_worker.py``), one process per environment with
the same environment variables and threads, loaded, warmed up and timed inside the worker the
same way (tokenisation included, the pipe excluded). Every round runs every engine in a rotating
order on the same mixed workload, and so does every single query; ratios are within one run.
Static int8 on both sides is calibrated on the same texts (ours by default).

    python -m benchmarks.run --only peers [--quick]
    python -m benchmarks.bench_peers --engines onnx-int8,st-onnx-int8 --queries 40 --out /tmp/x
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.bench_encode import EXPORTS, percentile
from benchmarks.common import CACHE, ROOT, cpu_description, msmarco_like_model
from benchmarks.workloads import standard_workloads

log = logging.getLogger("bench.peers")
VENV = CACHE / "peers-venv"
# torch first and pinned: a plain requirement would pull a CUDA build.
REQUIREMENTS = (
    ("torch==2.13.0",),
    # The newest releases whose extras resolve together (pip's own pick, pinned: resolving them
    # unpinned takes pip minutes of backtracking).
    (
        "sentence-transformers[onnx,openvino]==5.7.0",
        "transformers==4.57.6",
        "optimum-intel==1.27.0",
        "optimum-onnx==0.1.0",
        "datasets",
        "fastembed==0.9.1",
    ),
)
OURS = (
    "torch-fp32",
    "onnx-fp32",
    "openvino-fp32",
    "torch-bf16",
    "openvino-bf16",
    "onnx-int8",
    "openvino-int8",
)
PEERS = (
    "st-torch",
    "st-onnx",
    "st-onnx-int8",
    "st-openvino",
    "st-openvino-f32",
    "st-openvino-int8",
    "fastembed",
)


def peer_python() -> Path:
    """The peers' interpreter, creating and filling their virtual environment the first time."""
    python = VENV / "bin" / "python"
    stamp = VENV / ".installed"
    wanted = json.dumps(REQUIREMENTS)
    if stamp.is_file() and stamp.read_text() == wanted:
        return python
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
    for group in REQUIREMENTS:
        log.info("peers venv: pip install %s", " ".join(group))
        subprocess.run([str(python), "-m", "pip", "install", "-q", *group], check=True)
    stamp.write_text(wanted)
    return python


def worker_env(threads: int, pythonpath: str | None = None) -> dict[str, str]:
    """A worker's environment: this process's, with the thread settings every engine shares and
    the interpreter's own ``PYTHONPATH`` (ours: the project's ``src``)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update({"OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"})
    # Read when torch starts its OpenMP pool, so set before the worker imports anything: idle
    # OpenMP threads then sleep instead of spinning, and the processes take turns on the cores.
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return env


class Worker:
    """One engine-serving process (``peer_worker.py``); one request, one reply. Ours and the
    peers' run the same worker with the same environment (threads, OpenMP wait policy) and time
    each call inside the worker the same way; only the interpreter differs."""

    def __init__(self, python: Path, threads: int, pythonpath: str | None = None) -> None:
        CACHE.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [str(python), str(Path(__file__).with_name("peer_worker.py"))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=worker_env(threads, pythonpath),
            cwd=CACHE,
        )

    def ask(self, **request: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            return {"error": f"worker exited ({self.proc.poll()})"}
        return dict(json.loads(line))

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


def main(
    out_dir: Path,
    quick: bool,
    rounds: int | None = None,
    engines: tuple[str, ...] = OURS + PEERS,
    queries: int | None = None,
) -> None:
    """``engines``: the subset to run (ours and peers' keys); ``queries``: single-query calls
    timed per engine (default 60; quick 10)."""
    unknown = set(engines) - set(OURS + PEERS)
    if unknown:
        raise SystemExit(f"unknown engines {sorted(unknown)}; choose from {OURS + PEERS}")
    os.environ.setdefault("DISTILMARCO_CACHE", str(EXPORTS))
    from distilmarco.backends.cpu import physical_cores
    from distilmarco.backends.static_int8 import default_calibration_texts

    threads = physical_cores()
    folder = msmarco_like_model()
    workloads = {w.name: w for w in standard_workloads(folder / "tokenizer.json", quick)}
    mix, short = workloads["mix"], workloads["short"]
    rounds = rounds or (1 if quick else 3)
    calibration = default_calibration_texts()
    work = CACHE / "peers-work"
    work.mkdir(parents=True, exist_ok=True)
    runs: dict[str, Callable[[list[str]], float]] = {}
    ran: dict[str, str] = {}
    skipped: dict[str, str] = {}
    workers: list[Worker] = []
    for group in (OURS, PEERS):
        wanted = [k for k in group if k in engines]
        if not wanted:
            continue
        try:
            python = Path(sys.executable) if group is OURS else peer_python()
            path = str(ROOT / "src") if group is OURS else None
            worker = Worker(python, threads, path)
        except (OSError, subprocess.CalledProcessError) as exc:
            skipped.update({k: f"no environment: {exc}" for k in wanted})
            continue
        workers.append(worker)
        for key in wanted:
            reply = worker.ask(
                cmd="load",
                key=key,
                folder=str(folder),
                work=str(work),
                calibration=calibration,
                threads=threads,
            )
            if "error" in reply:
                skipped[key] = reply["error"]
                log.warning("%s: %s", key, reply["error"])
                continue

            def remote(texts: list[str], key: str = key, w: Worker = worker) -> float:
                reply = w.ask(cmd="run", key=key, texts=texts)
                return float(reply.get("seconds", float("nan")))

            runs[key], ran[key] = remote, reply["precision"]
    times: dict[str, list[float]] = {k: [] for k in runs}
    keys = list(runs)
    for r in range(rounds):
        for key in keys[r % len(keys) :] + keys[: r % len(keys)]:
            times[key].append(runs[key](list(mix.texts)))
        log.info("round %d/%d done", r + 1, rounds)
    queries_run = list(short.texts[: queries or (10 if quick else 60)])
    latency: dict[str, list[float]] = {k: [] for k in runs}
    for i, q in enumerate(queries_run):
        for key in keys[i % len(keys) :] + keys[: i % len(keys)]:
            latency[key].append(1000 * runs[key]([q]))
    for worker in workers:
        worker.close()
    st = min(times["st-torch"]) if times.get("st-torch") else None
    rows = [
        {
            "engine": key,
            "library": "distilmarco" if key in OURS else "peer",
            "precision_run": ran[key],
            "seconds_all": times[key],
            "useful_tokens_per_s": mix.tokens / min(times[key]),
            "vs_st_torch": (st / min(times[key])) if st else None,
            "p50_ms": percentile(latency[key], 50),
            "p99_ms": percentile(latency[key], 99),
        }
        for key in keys
    ]
    result = {
        "benchmark": "peers",
        "quick": quick,
        "processor": cpu_description(),
        "threads": threads,
        "rounds": rounds,
        "load_average": os.getloadavg(),
        "workload": mix.summary(),
        "queries": len(queries_run),
        "rows": rows,
        "skipped": skipped,
        "targets": targets(rows),
    }
    (out_dir / "peers.json").write_text(json.dumps(result, indent=2))
    (out_dir / "peers.md").write_text(markdown(result))


def _family(precision: str) -> str:
    """int8 engines count as int8 whatever runs between their quantised matmuls."""
    return "int8" if precision.startswith("int8") else precision


def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def best(library: str, family: str, field: str, pick: Callable[..., Any]) -> tuple[str, float]:
        hits = [
            r for r in rows if r["library"] == library and _family(r["precision_run"]) == family
        ]
        if not hits:
            return "none ran", float("nan")
        top = pick(hits, key=lambda r: r[field])
        return top["engine"], float(top[field])

    out = []
    for family, needed in (("int8", 1.15), ("bf16", 1.15)):
        ours, v = best("distilmarco", family, "useful_tokens_per_s", max)
        theirs, p = best("peer", family, "useful_tokens_per_s", max)
        out.append(
            {
                "target": f"{family} mix: our best >= {needed}x the best peer {family} ({theirs})",
                "value": v / p,
                "met": bool(v / p >= needed),
                "by": ours,
            }
        )
    st = next((r for r in rows if r["engine"] == "st-torch"), None)
    ours, v = best("distilmarco", "fp32", "useful_tokens_per_s", max)
    if st:
        ratio = v / st["useful_tokens_per_s"]
        out.append(
            {
                "target": "fp32 mix >= 1.4x sentence-transformers torch",
                "value": ratio,
                "met": bool(ratio >= 1.4),
                "by": ours,
            }
        )
    for family in ("fp32", "bf16", "int8"):
        ours, v = best("distilmarco", family, "p50_ms", min)
        theirs, p = best("peer", family, "p50_ms", min)
        out.append(
            {
                "target": f"{family} single-query p50 the lowest (peer best: {theirs}, ratio ours/theirs)",
                "value": v / p,
                "met": bool(v <= p),
                "by": ours,
            }
        )
    return out


def markdown(res: dict[str, Any]) -> str:
    w = res["workload"]
    lines = [
        "## Against sentence-transformers' backends and fastembed (`bench_peers`)",
        "",
        f"Random full-size DistilBERT (msmarco-distilbert-base-v4 layout); {res['processor']}; "
        f"{res['threads']} threads for every engine; workload {w['description']} "
        f"({w['texts']} texts, {w['tokens']} tokens, mean {w['mean_tokens']}, max {w['max_tokens']}); "
        f"best of {res['rounds']} interleaved round(s); single-query latency over {res['queries']} "
        f"short queries. Load average at the end {res['load_average'][0]:.1f} (the machine was "
        "shared with other jobs: compare ratios within this table only). Ours and the peers are "
        "served by the same worker script, each side in its own process and virtual environment, "
        "timed inside the worker; `ran` is the precision each engine really ran."
        + (" **Quick run: smoke-test sizes, indicative only.**" if res["quick"] else ""),
        "",
        "| engine | ran | useful tok/s (mix) | vs ST torch | p50 ms | p99 ms |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in sorted(
        res["rows"], key=lambda r: (_family(r["precision_run"]), -r["useful_tokens_per_s"])
    ):
        sp = f"{r['vs_st_torch']:.2f}x" if r["vs_st_torch"] else "-"
        lines.append(
            f"| {r['engine']} | {r['precision_run']} | {r['useful_tokens_per_s']:.0f} | {sp} | "
            f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} |"
        )
    if res["skipped"]:
        lines += ["", "Not run: " + "; ".join(f"`{k}` ({v})" for k, v in res["skipped"].items())]
    lines += ["", "| target (issue 25) | measured | met | by |", "|---|---:|---|---|"]
    for t in res["targets"]:
        lines.append(
            f"| {t['target']} | {t['value']:.2f} | {'yes' if t['met'] else 'NO'} | {t['by']} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_peers")
    parser.add_argument("--quick", action="store_true", help="the small workloads")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (3; quick 1)")
    parser.add_argument(
        "--engines", default=",".join(OURS + PEERS), help="comma-separated subset (default: all)"
    )
    parser.add_argument("--queries", type=int, default=None, help="single queries (60; quick 10)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    args.out.mkdir(parents=True, exist_ok=True)
    engines = tuple(e.strip() for e in args.engines.split(",") if e.strip())
    main(args.out, args.quick, args.rounds, engines, args.queries)
