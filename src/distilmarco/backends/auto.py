"""``backend="auto"`` on CPU: the fastest engine for the requested precision, measured here.

The first time a model is asked for with ``auto`` on a CPU, every installed engine that runs that
precision (``CANDIDATES``) is built and timed on a short mixed workload (queries, passages and one
long text, in the encoder's token-budget batches, interleaved rounds); the fastest wins. The choice
is kept in ``<cache>/auto-backend.json`` keyed by CPU model, threads, model export key, precision
and runtime versions, so later calls only read it. The candidates of a precision all compute that
precision: ``auto`` never turns an fp32 request into int8 or bf16.

``DISTILMARCO_AUTO=static`` skips measuring and uses the fixed preference of ``choose_backend``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from distilmarco.backends.cpu import default_threads
from distilmarco.backends.export import cache_root, export_dir
from distilmarco.errors import BackendError, MissingExtraError
from distilmarco.model.st_format import SentenceModelSpec

log = logging.getLogger(__name__)

CANDIDATES: dict[str, tuple[str, ...]] = {
    "fp32": ("onnx", "openvino", "torch"),
    "bf16": ("torch", "openvino"),
    "int8": ("onnx", "openvino"),
}
CACHE_FILE = "auto-backend.json"
ROUNDS = 3
# The measured workload: (texts, tokens each), queries, passages and one long text.
WORKLOAD = ((24, 12), (12, 96), (1, 320))
_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")

Build = Callable[[str], object]


@dataclass(frozen=True)
class Choice:
    """One measured decision: the winner and every candidate's useful tokens per second."""

    backend: str
    tokens_per_s: dict[str, float]
    cpu: str
    measured_at: float


def cpu_model() -> str:
    """The CPU's model name and the matrix-instruction flags that decide which engine wins."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    return f"{name} [{' '.join(f for f in _FLAGS if f in flags)}]"


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def choice_key(
    spec: SentenceModelSpec, precision: str, threads: int, cache_dir: str | os.PathLike[str] | None
) -> str:
    parts = {
        "cpu": cpu_model(),
        "threads": threads,
        "model": export_dir(spec, cache_dir).name,
        "precision": precision,
        "versions": [_version(p) for p in ("torch", "onnxruntime", "openvino", "nncf")],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def read_choices(path: Path) -> dict[str, Choice]:
    """The cache file's choices; an unreadable or malformed file counts as empty."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return {k: Choice(**v) for k, v in raw.items()}
    except (OSError, ValueError, TypeError, AttributeError):
        return {}


def write_choice(path: Path, key: str, choice: Choice) -> None:
    """Add ``choice`` under ``key``: read, update, write a temp file, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    choices = read_choices(path)
    choices[key] = choice
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({k: asdict(v) for k, v in choices.items()}, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def workload_batches(
    vocab_size: int, max_length: int, budget: int, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``WORKLOAD`` as random token ids in length-sorted batches of at most ``budget`` tokens."""
    rng = np.random.default_rng(seed)
    lengths = sorted(
        (min(n, max_length) for count, n in WORKLOAD for _ in range(count)), reverse=True
    )
    low = min(1000, vocab_size // 2)  # past the special and unused tokens of BERT vocabularies
    batches, start = [], 0
    while start < len(lengths):
        width = lengths[start]
        rows = lengths[start : start + max(1, budget // width)]
        ids = np.zeros((len(rows), width), np.int64)
        mask = np.zeros((len(rows), width), np.int64)
        for r, n in enumerate(rows):
            ids[r, :n] = rng.integers(low, vocab_size, n)
            mask[r, :n] = 1
        batches.append((ids, mask))
        start += len(rows)
    return batches


def measure(
    backends: dict[str, object], vocab_size: int, max_length: int, rounds: int = ROUNDS
) -> dict[str, float]:
    """Useful tokens/s of each built backend on ``WORKLOAD``: best of ``rounds`` interleaved."""
    feeds = {
        name: workload_batches(vocab_size, max_length, b.batch_tokens)  # type: ignore[attr-defined]
        for name, b in backends.items()
    }
    tokens = sum(int(m.sum()) for _, m in next(iter(feeds.values())))
    best = {name: float("inf") for name in backends}
    for name, b in backends.items():  # warm-up: first calls compile kernels
        b.embed(*feeds[name][0])  # type: ignore[attr-defined]
    names = list(backends)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            for ids, mask in feeds[name]:
                backends[name].embed(ids, mask)  # type: ignore[attr-defined]
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: tokens / seconds for name, seconds in best.items()}


def fastest(
    spec: SentenceModelSpec,
    precision: str,
    build: Build,
    threads: int | None,
    cache_dir: str | os.PathLike[str] | None,
    candidates: Sequence[str] | None = None,
) -> object:
    """The fastest backend for ``precision`` that ``build(name)`` can make, measured once and
    remembered; a remembered choice that no longer builds is measured again."""
    names = tuple(candidates or CANDIDATES[precision])
    path = cache_root(cache_dir) / CACHE_FILE
    key = choice_key(spec, precision, threads or default_threads(), cache_dir)
    known = read_choices(path).get(key)
    if known is not None and known.backend in names:
        try:
            return build(known.backend)
        except (BackendError, MissingExtraError) as exc:
            log.warning("remembered backend %s failed (%s); measuring again", known.backend, exc)
    built: dict[str, object] = {}
    for name in names:
        try:
            backend = build(name)
        except (BackendError, MissingExtraError) as exc:
            log.info("auto: %s/%s is not available here: %s", name, precision, exc)
            continue
        if getattr(backend, "precision", precision) != precision:
            log.info("auto: %s runs %s here, not %s", name, backend.precision, precision)  # type: ignore[attr-defined]
            continue
        built[name] = backend
    if not built:
        raise BackendError(f"no backend could run precision {precision!r} on this CPU")
    if len(built) == 1:
        return next(iter(built.values()))
    speed = measure(built, spec.transformer.vocab_size, spec.max_seq_length)
    winner = max(speed, key=lambda n: speed[n])
    log.info(
        "auto: %s for %s (useful tokens/s: %s)",
        winner,
        precision,
        ", ".join(f"{n} {v:.0f}" for n, v in speed.items()),
    )
    write_choice(path, key, Choice(winner, speed, cpu_model(), time.time()))
    return built[winner]
