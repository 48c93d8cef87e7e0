"""Bulk embedding on Ray Data against plain one-process embedding, on MS MARCO-like passages.

    python -m benchmarks.run --only distributed [--quick]
    python -m benchmarks.bench_distributed --passages 5000     # any size in between

Same passages (60-120 tokens of real English words), same full-size random DistilBERT (the
msmarco-distilbert-base-v4 shape), same backend, each run end to end (model load, embedding,
Parquet written) on a local single-node Ray started by this benchmark with 2 CPUs:

- plain: ``Encoder(threads=2).encode`` + one Parquet file, what ``distilmarco embed`` does;
- Ray 1 actor x 2 CPUs (overhead), Ray 1 x 1 CPU and 2 x 1 CPU (scaling);
- Ray 1 actor x 2 CPUs with that actor killed once mid-job (cost of a fault);
- a Ray job of 16 passages: the fixed cost of a job (actor start, model load), which the
  per-passage figures subtract.

Writes ``distributed.md`` and ``distributed.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import CACHE, cpu_description, msmarco_like_model
from benchmarks.workloads import make_texts

log = logging.getLogger(__name__)

FULL, QUICK = 50_000, 300
FIXED_COST_PASSAGES = 16
OVERHEAD_TARGET, SCALING_TARGET = 0.90, 0.85


def passages(model: Path, count: int, seed: int = 0) -> list[str]:
    import numpy as np

    targets = np.random.default_rng(seed).integers(60, 121, count)
    texts, _ = make_texts(model / "tokenizer.json", [int(t) for t in targets], seed)
    return texts


def write_input(path: Path, texts: list[str]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": [f"p{i}" for i in range(len(texts))], "text": texts}), path)
    return path


def plain(model: Path, src: Path, out: Path, backend: str) -> dict[str, Any]:
    """What ``distilmarco embed INPUT -o OUT.parquet`` does, timed from the model load on."""
    from distilmarco import Encoder
    from distilmarco.textio import read_text_file, write_vectors

    start = time.perf_counter()
    encoder = Encoder(model, backend=backend, threads=2)
    texts = read_text_file(src, "text").texts
    vectors = encoder.encode(texts, truncation="count")
    write_vectors(out / "plain.parquet", vectors, texts)
    return {"seconds": time.perf_counter() - start, "rows": len(texts)}


def on_ray(model: Path, src: Path, out: Path, backend: str, **options: Any) -> dict[str, Any]:
    from distilmarco.distributed import JobSettings, run_job
    from distilmarco.index.identity import Engine

    shutil.rmtree(out, ignore_errors=True)
    settings = JobSettings(input=src, output=out, model=str(model), engine=Engine(backend),
                           **options)  # fmt: skip
    report = run_job(settings, address=None)
    return {"seconds": report.seconds, "rows": report.rows}


DRIVER = """
import sys
from pathlib import Path
import ray
from distilmarco.distributed import JobSettings, run_job
from distilmarco.index.identity import Engine
src, out, ckpt, model, backend, address = sys.argv[1:]
ray.init(address=address, log_to_driver=False)
run_job(JobSettings(input=Path(src), output=Path(out), model=model, engine=Engine(backend),
                    cpus_per_actor=2, checkpoint=Path(ckpt)), address=None)
"""


def killed_driver(model: Path, src: Path, work: Path, backend: str) -> dict[str, Any]:
    """A driver (a process started here) SIGKILLed once its first shard is committed, then the
    same job run again: how many passages the re-run embeds, and how long it takes."""
    import signal
    import sys

    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray

    from distilmarco.distributed import JobSettings, run_job
    from distilmarco.index.identity import Engine

    out, ckpt = work / "dk", work / "dk-ckpt"
    address = ray.get_runtime_context().gcs_address
    args = [str(src), str(out), str(ckpt), str(model), backend, address]
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, *args], stderr=subprocess.DEVNULL)
    try:
        while driver.poll() is None:
            try:
                if any(pq.ParquetFile(p) for p in (ckpt / "shards").glob("*.parquet")):
                    break
            except (pa.ArrowInvalid, OSError):
                pass
            time.sleep(0.1)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    settings = JobSettings(input=src, output=out, model=str(model), engine=Engine(backend),
                           cpus_per_actor=2, checkpoint=ckpt)  # fmt: skip
    report = run_job(settings, address=None)
    return {"seconds": report.seconds, "rows": report.rows, "embedded_rows": report.embedded_rows,
            "resumed_documents": report.resumed_documents}  # fmt: skip


def measure(count: int, work: Path, rounds: int) -> dict[str, Any]:
    import ray

    from distilmarco import Encoder
    from distilmarco.distributed import FaultPlan

    model = msmarco_like_model()
    backend = Encoder(model).backend.name  # ``auto`` resolved once; exports it if needed
    texts = passages(model, count)
    src = write_input(work / "passages.parquet", texts)
    tiny = write_input(work / "fixed.parquet", texts[:FIXED_COST_PASSAGES])
    ray.init(address="local", num_cpus=2, object_store_memory=200 * 2**20, include_dashboard=False,
             log_to_driver=False)  # fmt: skip
    ray.data.DataContext.get_current().enable_progress_bars = False
    runs: dict[str, Callable[[], dict[str, Any]]] = {
        "fixed cost (16 passages, 1 x 2 CPUs)": lambda: on_ray(model, tiny, work / "f", backend,
                                                                cpus_per_actor=2),
        "plain (2 threads)": lambda: plain(model, src, work, backend),
        "ray 1 actor x 2 CPUs": lambda: on_ray(model, src, work / "r2", backend, cpus_per_actor=2),
        "ray 1 actor x 1 CPU": lambda: on_ray(model, src, work / "r1", backend, cpus_per_actor=1),
        "ray 2 actors x 1 CPU": lambda: on_ray(model, src, work / "r11", backend,
                                               actors=(2, 2), cpus_per_actor=1),
        "ray 1 actor x 2 CPUs, actor killed once": lambda: on_ray(
            model, src, work / "rk", backend, cpus_per_actor=2,
            faults=FaultPlan(kill_once_on=f"p{count // 2}", marker=str(work / f"killed-{time.monotonic_ns()}"))),
    }  # fmt: skip
    results: dict[str, Any] = {name: {"seconds_all": [], "load_all": []} for name in runs}
    try:
        for _ in range(rounds):  # interleaved: each round runs every configuration once
            for name, run in runs.items():
                load = os.getloadavg()[0]
                got = run()
                results[name]["seconds_all"].append(got["seconds"])
                results[name]["load_all"].append(load)
                results[name]["rows"] = got["rows"]
                log.warning("%s: %.1fs", name, got["seconds"])
        resumed = killed_driver(model, src, work, backend)
        log.warning("re-run after a driver kill: %s", resumed)
    finally:
        ray.shutdown()
    for res in results.values():
        res["seconds"] = min(res["seconds_all"])  # best of the rounds: the least disturbed
    return {"backend": backend, "passages": count, "rounds": rounds, "runs": results,
            "driver_killed": resumed}  # fmt: skip


def figures(data: dict[str, Any]) -> dict[str, float]:
    runs, n = data["runs"], data["passages"]
    fixed = runs["fixed cost (16 passages, 1 x 2 CPUs)"]["seconds"]

    def rate(name: str, minus_fixed: bool) -> float:
        seconds = runs[name]["seconds"] - (fixed if minus_fixed else 0.0)
        return n / max(seconds, 1e-9)

    base = rate("plain (2 threads)", False)
    return {
        "fixed_cost_s": fixed,
        "overhead_ratio": rate("ray 1 actor x 2 CPUs", False) / base,
        "overhead_ratio_without_fixed_cost": rate("ray 1 actor x 2 CPUs", True) / base,
        "scaling_efficiency": rate("ray 2 actors x 1 CPU", False)
        / (2 * rate("ray 1 actor x 1 CPU", False)),
        "scaling_efficiency_without_fixed_cost": rate("ray 2 actors x 1 CPU", True)
        / (2 * rate("ray 1 actor x 1 CPU", True)),
        "killed_actor_extra_s": runs["ray 1 actor x 2 CPUs, actor killed once"]["seconds"]
        - runs["ray 1 actor x 2 CPUs"]["seconds"],
    }


def threads_per_core() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    for line in out.splitlines():
        if line.startswith("Thread(s) per core:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def render(data: dict[str, Any], fig: dict[str, float], cpu: str, load: tuple[float, float]) -> str:
    n, tpc, dk = data["passages"], data["threads_per_core"], data["driver_killed"]
    shared = ("the two vCPUs are separate cores as the VM reports them (lscpu: 1 thread per core)"
              if tpc == "1" else f"lscpu: {tpc} threads per core")  # fmt: skip
    lines = [
        "## Bulk embedding on Ray Data (`bench_distributed.py`)",
        "",
        f"{n:,} MS MARCO-like passages (60-120 tokens), full-size random DistilBERT, backend "
        f"{data['backend']} fp32; every run end to end (model load, embedding, Parquet written) "
        f"on a local one-node Ray with 2 CPUs. CPU: {cpu}; {shared}. One-minute load average "
        f"{load[0]:.2f} before and {load[1]:.2f} after: the machine was shared with other jobs, "
        "so absolute figures are noisy and the ratios within this run are the comparison."
        + (
            f" **Quick size ({n} passages, not the issue's {FULL:,}): the fixed cost of a Ray job "
            "weighs far more than it would at full size.**"
            if n < FULL
            else ""
        ),
        "",
        f"Best of {data['rounds']} interleaved rounds (every run once per round); the figures "
        "below use the best times.",
        "",
        "| run | best s | passages/s | every round, s | load before each |",
        "|---|---:|---:|---|---|",
    ]
    for name, run in data["runs"].items():
        rows, each = run["rows"], " / ".join(f"{t:.1f}" for t in run["seconds_all"])
        loads = " / ".join(f"{x:.1f}" for x in run["load_all"])
        lines.append(f"| {name} | {run['seconds']:.1f} | {rows / run['seconds']:.1f} | {each} | "
                     f"{loads} |")  # fmt: skip
    lines += [
        "",
    ]
    if max(load) > 4:
        lines += [
            f"**The machine was oversubscribed (load average up to {max(load):.0f} on 2 vCPUs): "
            "every run competed with other users' jobs, and when 1 actor x 1 CPU beats 1 x 2 "
            "CPUs the figures measure that contention, not Ray. Use the quiet re-run below for "
            "the targets.**",
            "",
        ]
    lines += [
        f"- Fixed cost of a Ray job (16 passages): {fig['fixed_cost_s']:.1f} s.",
        f"- Ray overhead, 1 actor x 2 CPUs / plain: {fig['overhead_ratio']:.2f} end to end, "
        f"{fig['overhead_ratio_without_fixed_cost']:.2f} without the fixed cost "
        f"(target >= {OVERHEAD_TARGET}).",
        f"- Scaling 1 -> 2 actors of 1 CPU: efficiency {fig['scaling_efficiency']:.2f} end to "
        f"end, {fig['scaling_efficiency_without_fixed_cost']:.2f} without the fixed cost "
        f"(target >= {SCALING_TARGET}).",
        f"- One actor killed mid-job: {fig['killed_actor_extra_s']:+.1f} s against the same job "
        "without the kill (a restart: new process, model load, its batch again).",
        f"- Driver SIGKILLed after its first committed shard, then the same job again: the "
        f"re-run embedded {dk['embedded_rows']} of {dk['rows']} passages "
        f"({dk['resumed_documents']} documents kept from the checkpoint) in {dk['seconds']:.1f} s.",
        "",
        "Quiet full-size re-run: `python -m benchmarks.run --only distributed` (50k passages) on an "
        "otherwise idle machine.",
    ]
    return "\n".join(lines)


def run(out_dir: Path, count: int, rounds: int = 2) -> None:
    os.environ.setdefault("DISTILMARCO_CACHE", str(CACHE / "exports"))
    before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-distributed-") as tmp:
        data = measure(count, Path(tmp), rounds)
    load = (before, os.getloadavg()[0])
    data["threads_per_core"] = threads_per_core()
    fig = figures(data)
    cpu = cpu_description()
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {"cpu": cpu, "load": load, **data, "figures": fig}
    (out_dir / "distributed.json").write_text(json.dumps(record, indent=2) + "\n")
    (out_dir / "distributed.md").write_text(render(data, fig, cpu, load) + "\n")


def main(out_dir: Path, quick: bool) -> None:
    run(out_dir, QUICK if quick else FULL, rounds=1 if quick else 2)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passages", type=int, default=FULL)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()
    run(args.out, args.passages, args.rounds)
