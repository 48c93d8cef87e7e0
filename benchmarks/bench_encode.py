"""Encoding speed: sentence-transformers against each of our backend x precision combinations.

In one process, interleaved (every round runs every combination on every workload, in a rotating
order), same inputs, same thread count. Model: a full-size random DistilBERT in the
msmarco-distilbert-base-v4 layout. Load time, peak RSS and RSS growth over repeated calls are
measured in a fresh subprocess per combination.

    python -m benchmarks.run --only encode [--quick]
    python -m benchmarks.bench_encode --probe onnx-int8     # one combination's load/memory probe
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import (
    CACHE,
    ROOT,
    cpu_description,
    matmul_peak_gflops,
    msmarco_like_model,
    peak_rss_mib,
)
from benchmarks.workloads import (
    Workload,
    st_padding_fraction,
    standard_workloads,
    useful_flops,
)

log = logging.getLogger("bench.encode")
EXPORTS = CACHE / "distilmarco"


@dataclass(frozen=True)
class Combo:
    key: str  # e.g. "onnx-int8"
    label: str
    library: str  # "sentence-transformers" | "distilmarco"
    backend: str
    precision: str
    packed: bool = True


COMBOS = (
    Combo("st-torch", "sentence-transformers torch fp32", "sentence-transformers", "torch", "fp32"),
    Combo("st-onnx", "sentence-transformers onnx fp32", "sentence-transformers", "onnx", "fp32"),
    Combo(
        "torch-fp32-padded", "ours torch fp32, no packing", "distilmarco", "torch", "fp32", False
    ),
    Combo("torch-fp32", "ours torch fp32", "distilmarco", "torch", "fp32"),
    Combo("torch-bf16", "ours torch bf16", "distilmarco", "torch", "bf16"),
    # ONNX Runtime runs the fused graph, which is not packed (its attention kernel takes the
    # padded layout): linear layers compute on padding there.
    Combo("onnx-fp32", "ours onnx fp32", "distilmarco", "onnx", "fp32", False),
    Combo("onnx-int8", "ours onnx int8", "distilmarco", "onnx", "int8", False),
    Combo("openvino-fp32", "ours openvino fp32", "distilmarco", "openvino", "fp32"),
    Combo("openvino-bf16", "ours openvino bf16", "distilmarco", "openvino", "bf16"),
    Combo("openvino-int8", "ours openvino static int8 (NNCF)", "distilmarco", "openvino", "int8"),
    # TensorFlow runs the SavedModel's embed_ids signature; LiteRT pads each batch further, to
    # the fixed (batch, length) shape of the signature that holds it.
    Combo("tensorflow-fp32", "ours tensorflow fp32", "distilmarco", "tensorflow", "fp32", False),
    Combo("litert-fp32", "ours litert fp32", "distilmarco", "litert", "fp32", False),
    Combo("litert-int8", "ours litert int8", "distilmarco", "litert", "int8", False),
)
BY_KEY = {c.key: c for c in COMBOS}


def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


# --- building one combination --------------------------------------------------------------


@dataclass(frozen=True)
class Runner:
    encode: Callable[[list[str]], np.ndarray]
    precision: (
        str  # the precision the engine really runs (a bf16 request on a CPU without it: fp32)
    )


def load(combo: Combo, folder: Path, threads: int) -> Callable[[list[str]], np.ndarray]:
    """An ``encode(texts) -> (N, D)`` function for ``combo``; raises if it cannot be built."""
    return load_runner(combo, folder, threads).encode


def load_runner(combo: Combo, folder: Path, threads: int) -> Runner:
    """``combo`` built, with the precision it runs; raises if it cannot be built."""
    if combo.library == "sentence-transformers":
        from sentence_transformers import SentenceTransformer

        kwargs: dict[str, Any] = {"device": "cpu"}
        if combo.backend != "torch":
            kwargs["backend"] = combo.backend
        model = SentenceTransformer(str(folder), **kwargs)
        return Runner(lambda texts: model.encode(texts, show_progress_bar=False), combo.precision)

    from distilmarco import Encoder

    enc = Encoder(folder, backend=combo.backend, precision=combo.precision, threads=threads)
    if combo.backend == "torch" and not combo.packed:
        from distilmarco.backends.torch_backend import TorchBackend

        enc.backend = TorchBackend.from_spec(enc.spec, precision=combo.precision, packed=False)
    return Runner(lambda texts: enc.encode(texts, truncation="count"), enc.info.precision)


def rss_mib() -> float:
    """Current resident set size, MiB (Linux)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except OSError:
        return float("nan")
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def probe(key: str, folder: Path, threads: int) -> dict[str, float]:
    """Run in a fresh process: load time, RSS after load, after each of 3 calls, and peak."""
    start = time.perf_counter()
    encode = load(BY_KEY[key], folder, threads)
    load_s = time.perf_counter() - start
    after_load = rss_mib()
    # The quick mix (24 texts, up to ~500 tokens) reaches the largest batch shapes already.
    mix = next(w for w in standard_workloads(folder / "tokenizer.json", True) if w.name == "mix")
    texts = list(mix.texts)
    calls = []
    for i in range(3):
        encode(texts[i % 2 :: 1 + i % 2])  # varying lengths and batch shapes
        calls.append(rss_mib())
    return {
        "load_s": load_s,
        "rss_after_load_mib": after_load,
        "rss_after_calls_mib": calls[-1],
        "rss_growth_call1_to_3_mib": calls[-1] - calls[0],
        "peak_rss_mib": peak_rss_mib(),
    }


def probe_in_subprocess(key: str, folder: Path, threads: int, quick: bool) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.bench_encode", "--probe", key, "--model", str(folder)]
    cmd += ["--threads", str(threads)] + (["--quick"] if quick else [])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


# --- the timed runs --------------------------------------------------------------------------


def time_workloads(
    runners: dict[str, Callable[[list[str]], np.ndarray]],
    workloads: list[Workload],
    rounds: int,
) -> dict[tuple[str, str], list[float]]:
    """Seconds per (combo, workload), ``rounds`` interleaved rounds with a rotating order."""
    times: dict[tuple[str, str], list[float]] = {}
    keys = list(runners)
    for r in range(rounds):
        order = keys[r % len(keys) :] + keys[: r % len(keys)]
        for w in workloads:
            texts = list(w.texts)
            for key in order:
                t = time.perf_counter()
                runners[key](texts)
                times.setdefault((key, w.name), []).append(time.perf_counter() - t)
            log.info("round %d/%d %s done", r + 1, rounds, w.name)
    return times


def time_latency(
    runners: dict[str, Callable[[list[str]], np.ndarray]], queries: list[str]
) -> dict[str, list[float]]:
    """Milliseconds for one query at a time, interleaved across combinations."""
    ms: dict[str, list[float]] = {k: [] for k in runners}
    for q in queries:
        for key, encode in runners.items():
            t = time.perf_counter()
            encode([q])
            ms[key].append((time.perf_counter() - t) * 1000)
    return ms


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


# --- report -----------------------------------------------------------------------------------


def main(out_dir: Path, quick: bool) -> None:
    os.environ.setdefault("DISTILMARCO_CACHE", str(EXPORTS))
    from distilmarco.backends.cpu import physical_cores

    threads = physical_cores()
    import torch

    torch.set_num_threads(threads)
    folder = msmarco_like_model()
    workloads = standard_workloads(folder / "tokenizer.json", quick)
    rounds = 1 if quick else 3  # torch ran 20-30% faster in round 2 than in round 1
    peak_before = matmul_peak_gflops(threads, seconds=1.0 if quick else 3.0)

    runners: dict[str, Callable[[list[str]], np.ndarray]] = {}
    ran: dict[str, str] = {}  # combo -> precision it ran
    skipped: dict[str, str] = {}
    for combo in COMBOS:
        if combo.key == "torch-bf16" and not cpu_has_bf16():
            skipped[combo.key] = "this CPU has no native bf16 (avx512_bf16/AMX): emulated, slow"
            continue
        try:
            runner = load_runner(combo, folder, threads)  # exports are built here, once
            runners[combo.key], ran[combo.key] = runner.encode, runner.precision
        except Exception as exc:  # report, keep benchmarking the others
            skipped[combo.key] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}"
            log.warning("skipping %s: %s", combo.key, skipped[combo.key])
    warm = list(workloads[0].texts[:8])
    for encode in runners.values():
        encode(warm)

    times = time_workloads(runners, workloads, rounds)
    queries = list(workloads[0].texts[: 10 if quick else 200])
    latency = time_latency(runners, queries)
    peak = max(peak_before, matmul_peak_gflops(threads, seconds=1.0 if quick else 3.0))
    memory = {key: probe_in_subprocess(key, folder, threads, quick) for key in runners}

    rows = []
    for w in workloads:
        flops = useful_flops(w.lengths)
        base = min(times[("st-torch", w.name)]) if ("st-torch", w.name) in times else None
        for key in runners:
            best = min(times[(key, w.name)])
            combo = BY_KEY[key]
            pad = (
                st_padding_fraction(w.lengths, w.texts)
                if combo.library == "sentence-transformers"
                else our_padding(folder, w, combo)
            )
            rows.append(
                {
                    "workload": w.name,
                    "combo": key,
                    "precision_run": ran[key],
                    "seconds_best": best,
                    "seconds_all": times[(key, w.name)],
                    "useful_tokens_per_s": w.tokens / best,
                    "docs_per_s": len(w.texts) / best,
                    "effective_gflops": flops / best / 1e9,
                    "fraction_of_matmul_peak": flops / best / 1e9 / peak,
                    "padding_fraction_batches": pad,
                    "padding_in_linear_layers": 0.0
                    if combo.packed and combo.library == "distilmarco"
                    else pad,
                    "speedup_vs_st_torch": (base / best) if base else None,
                }
            )
    lat = {
        k: {"p50_ms": percentile(v, 50), "p99_ms": percentile(v, 99), "n": len(v)}
        for k, v in latency.items()
    }
    result = {
        "benchmark": "encode",
        "quick": quick,
        "machine": {
            "platform": platform.platform(),
            "processor": cpu_description(),
            "physical_cores": threads,
            "logical_cpus": os.cpu_count(),
            "load_average": os.getloadavg(),
        },
        "threads": threads,
        "rounds": rounds,
        "matmul_peak_gflops": peak,
        "model": "random DistilBERT, msmarco-distilbert-base-v4 layout (6x768, mean pooling)",
        "workloads": [w.summary() for w in workloads],
        "combos": [asdict(c) for c in COMBOS],
        "skipped": skipped,
        "throughput": rows,
        "latency": lat,
        "memory": memory,
        "targets": targets(rows, lat),
    }
    (out_dir / "encode.json").write_text(json.dumps(result, indent=2))
    (out_dir / "encode.md").write_text(markdown(result))


def our_padding(folder: Path, w: Workload, combo: Combo) -> float:
    """Padding fraction of our length-sorted token-budget batches (what the batch layout holds)."""
    from distilmarco.backends.litert_backend import LiteRTBackend
    from distilmarco.backends.litert_export import signatures
    from distilmarco.backends.onnx_backend import OnnxBackend
    from distilmarco.backends.openvino_backend import OpenVinoBackend
    from distilmarco.backends.tensorflow_backend import TensorFlowBackend
    from distilmarco.backends.torch_backend import CPU_BATCH_TOKENS
    from distilmarco.batching import plan_batches
    from distilmarco.model.st_format import SentenceModelSpec

    budgets = {
        "torch": CPU_BATCH_TOKENS,
        "onnx": OnnxBackend.batch_tokens,
        "openvino": OpenVinoBackend.batch_tokens,
        "tensorflow": TensorFlowBackend.batch_tokens,
        "litert": LiteRTBackend.batch_tokens,
    }
    lengths = np.array(w.lengths)
    shapes = signatures(SentenceModelSpec.from_folder(folder).max_seq_length)
    real = padded = 0
    for rows in plan_batches(lengths, budgets[combo.backend]):
        real += int(lengths[rows].sum())
        width = int(lengths[rows].max())
        if combo.backend == "litert":  # padded on to the signature's fixed (batch, length)
            sig = next(s for s in shapes if s.length >= width)
            padded += sig.batch * sig.length * -(-len(rows) // sig.batch)
        else:
            padded += width * len(rows)
    return 1.0 - real / padded if padded else 0.0


def targets(rows: list[dict[str, Any]], lat: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    def tps(workload: str, key: str) -> float | None:
        hit = [r for r in rows if r["workload"] == workload and r["combo"] == key]
        return hit[0]["useful_tokens_per_s"] if hit else None

    def best(
        workload: str, keys: list[str], field: str = "useful_tokens_per_s"
    ) -> tuple[str, float]:
        hits = [r for r in rows if r["workload"] == workload and r["combo"] in keys]
        if not hits:
            return "none ran", float("nan")
        top = max(hits, key=lambda r: r[field])
        return top["combo"], top[field]

    ours_fp32 = [k for k in BY_KEY if k.endswith("fp32") and not k.startswith("st-")]
    ours_int8 = [k for k in BY_KEY if k.endswith("int8")]
    st_keys = [k for k in BY_KEY if k.startswith("st-")]
    st = tps("mix", "st-torch")
    out: list[dict[str, Any]] = []
    if st:
        k, v = best("mix", ours_fp32)
        out.append(target("fp32 mix >= 1.3x sentence-transformers torch", v / st, 1.3, k))
        k, v = best("p128", ours_fp32, "fraction_of_matmul_peak")
        out.append(target("fp32 128-token passages >= 80% of matmul peak", v, 0.8, k))
        if any(r["combo"] in ours_int8 for r in rows):
            k, v = best("mix", ours_int8)
            out.append(target("int8 mix >= 2.5x sentence-transformers torch fp32", v / st, 2.5, k))
            _, stbest = best("mix", st_keys)
            out.append(
                target("int8 mix ahead of sentence-transformers' fastest", v / stbest, 1.0, k)
            )
    if "st-torch" in lat:
        ours = {k: v["p50_ms"] for k, v in lat.items() if not k.startswith("st-")}
        k = min(ours, key=lambda x: ours[x])
        ratio = ours[k] / lat["st-torch"]["p50_ms"]
        out.append(
            target("single query p50 <= 0.7x sentence-transformers", 1 / ratio, 1 / 0.7, k, ratio)
        )
    return out


def target(
    name: str, value: float, needed: float, combo: str, shown: float | None = None
) -> dict[str, Any]:
    return {
        "target": name,
        "value": shown if shown is not None else value,
        "met": bool(value >= needed),  # False for NaN (nothing ran)
        "by": combo,
    }


def markdown(res: dict[str, Any]) -> str:
    m = res["machine"]
    lines = [
        "## Encoding speed (`bench_encode`)",
        "",
        f"{res['model']}; {res['threads']} threads for every runtime; {m['processor']}, "
        f"{m['physical_cores']} physical cores; load average at the end {m['load_average'][0]:.2f}. "
        f"Best of {res['rounds']} interleaved round(s). Measured fp32 matmul peak: "
        f"**{res['matmul_peak_gflops']:.0f} GFLOP/s**."
        + (" **Quick run: smoke-test sizes, indicative only.**" if res["quick"] else ""),
        "",
        "| workload | texts | tokens | mean | max |",
        "|---|---:|---:|---:|---:|",
    ]
    for w in res["workloads"]:
        lines.append(
            f"| {w['name']}: {w['description']} | {w['texts']} | {w['tokens']} | {w['mean_tokens']} | {w['max_tokens']} |"
        )
    for wname in [w["name"] for w in res["workloads"]]:
        lines += [
            "",
            f"**{wname}**",
            "",
            "| runtime | ran | useful tok/s | docs/s | vs ST torch | GFLOP/s | % of peak | padding (batches) | padding computed by linears |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in (r for r in res["throughput"] if r["workload"] == wname):
            sp = f"{r['speedup_vs_st_torch']:.2f}x" if r["speedup_vs_st_torch"] else "-"
            lines.append(
                f"| {r['combo']} | {r['precision_run']} | {r['useful_tokens_per_s']:.0f} | {r['docs_per_s']:.1f} | {sp} | "
                f"{r['effective_gflops']:.1f} | {100 * r['fraction_of_matmul_peak']:.0f}% | "
                f"{100 * r['padding_fraction_batches']:.0f}% | {100 * r['padding_in_linear_layers']:.0f}% |"
            )
    lines += [
        "",
        "**single query (one short text per call)**; load time and memory from a fresh process per runtime (load measured after `import torch`; RSS over 3 calls on the quick mix)",
        "",
        "| runtime | p50 ms | p99 ms | load s | RSS after load MiB | peak RSS MiB | RSS growth, calls 1→3 MiB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for k, v in res["latency"].items():
        mem = res["memory"].get(k, {})
        if "error" in mem:
            cells = f"probe failed: {mem['error'][:80]} | | | |"
        else:
            cells = f"{mem.get('load_s', float('nan')):.2f} | {mem.get('rss_after_load_mib', float('nan')):.0f} | {mem.get('peak_rss_mib', float('nan')):.0f} | {mem.get('rss_growth_call1_to_3_mib', float('nan')):+.0f}"
        lines.append(f"| {k} | {v['p50_ms']:.1f} | {v['p99_ms']:.1f} | {cells} |")
    if res["skipped"]:
        lines += [
            "",
            "Not run: " + "; ".join(f"`{k}` ({v})" for k, v in res["skipped"].items()) + ".",
        ]
    lines += [
        "",
        "**Targets (issue 3), from this run**",
        "",
        "| target | measured | met | by |",
        "|---|---:|---|---|",
    ]
    for t in res["targets"]:
        lines.append(
            f"| {t['target']} | {t['value']:.2f} | {'yes' if t['met'] else 'NO'} | {t['by']} |"
        )
    return "\n".join(lines) + "\n"


def _cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_encode")
    parser.add_argument(
        "--probe", choices=sorted(BY_KEY), help="load/memory probe of one combination"
    )
    parser.add_argument(
        "--model", type=Path, help="model folder (default: the random msmarco-like one)"
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("DISTILMARCO_CACHE", str(EXPORTS))
    if args.probe:
        import torch

        from distilmarco.backends.cpu import physical_cores

        threads = args.threads or physical_cores()
        torch.set_num_threads(threads)
        folder = args.model or msmarco_like_model()
        print(json.dumps(probe(args.probe, folder, threads)))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    main(args.out, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(_cli())
