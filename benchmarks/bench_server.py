"""Load test of ``distilmarco serve`` on loopback: 32 concurrent clients against /v1/embeddings.

Server and load generator are separate processes; everything talks to 127.0.0.1 only, and every
phase is bounded in time and in requests. Figures:

- the library's own throughput (``Encoder.encode`` on the same texts, before and after the load,
  the better of its default token budget and the server's);
- 32 clients for 60 s (``--quick``: 10 s, with all-MiniLM-L6-v2): status counts (zero 5xx), p50/p99 latency, texts/s, and
  the ratio to the library's texts/s;
- 4x overload (128 clients): only 200 and 429 may come back;
- the server's resident memory after the run against before it (within 10%).

Inputs are MS MARCO-like: short questions (STS Benchmark sentences) and ~60-word passages
(Cranfield abstracts), alternating. The model is a full-size random DistilBERT with the
msmarco-distilbert-base-v4 architecture (speed does not depend on the weights).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import SHARED_DATA, minilm_folder, msmarco_like_model, read_sts_sentences

log = logging.getLogger(__name__)

CLIENTS = 32
OVERLOAD = 4
PASSAGE_WORDS = 60
MAX_REQUESTS = 200_000  # hard bound per phase, whatever the speed
# The queue holds about what 32 clients keep in flight, so 4x as many clients get 429s.
# The model gets the same threads in the server and in the library run; the other half of the
# cores is left to the event loop and the load generator.
THREADS = max(1, (os.cpu_count() or 2) // 2)
SERVER_FLAGS = [
    "--max-batch-tokens",
    "2048",
    "--max-queue-tokens",
    "2048",
    "--max-wait-ms",
    "2",
    "--threads",
    str(THREADS),
]


@dataclass
class Phase:
    name: str
    clients: int
    seconds: float
    statuses: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    ok: int = 0
    ok_tokens: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    texts_per_s: float = 0.0
    tokens_per_s: float = 0.0


def main(out_dir: Path, quick: bool) -> None:
    logging.getLogger("httpx").setLevel(logging.WARNING)
    seconds = 10.0 if quick else 60.0
    overload_seconds = 5.0 if quick else 20.0
    # --quick uses the real all-MiniLM-L6-v2 (about 4x faster than DistilBERT-base on CPU) so that
    # a short run still sees thousands of requests; the full run uses the msmarco architecture.
    model, model_name = (
        (minilm_folder(), "all-MiniLM-L6-v2 (6x384, real weights)")
        if quick
        else (msmarco_like_model(), "msmarco-like DistilBERT (6x768, random weights)")
    )
    texts = msmarco_like_texts(300 if quick else 600)
    sample = texts[: 120 if quick else 200]  # the library's share of the same mix
    (library_before, library_cpu_before) = library_throughput(model, sample, 1)
    port = _free_port()
    proc = _start_server(model, port)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)
        # Warm-up at both load levels, so that the allocator has seen the largest batches
        # before the "before" memory figure: the check is for growth (leaks), not first use.
        run_phase(url, texts, Phase("warm-up", CLIENTS, 2.0 if quick else 5.0))
        run_phase(url, texts, Phase("warm-up overload", CLIENTS * OVERLOAD, 2.0 if quick else 5.0))
        rss_before = _rss_mib(proc.pid)
        cpu_start = _cpu_seconds(proc.pid)
        main_phase = run_phase(url, texts, Phase("32 clients", CLIENTS, seconds))
        server_cpu = _cpu_seconds(proc.pid) - cpu_start
        overload = run_phase(url, texts, Phase("4x overload", CLIENTS * OVERLOAD, overload_seconds))
        time.sleep(1.0)
        rss_after = _rss_mib(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            exit_code = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            exit_code = proc.wait()
    (library_after, library_cpu_after) = library_throughput(model, sample, 1)
    library = max(library_before, library_after)  # the stricter baseline
    library_cpu = max(library_cpu_before, library_cpu_after)
    server_5xx = sum(n for s, n in main_phase.statuses.items() if s.startswith("5"))
    overload_other = {s: n for s, n in overload.statuses.items() if s not in ("200", "429")}
    ratio = main_phase.texts_per_s / library if library else None
    rss_change = (rss_after - rss_before) / rss_before
    result: dict[str, Any] = {
        "quick": quick,
        "model": model_name,
        "cpu_count": os.cpu_count(),
        "load_average_1m": os.getloadavg()[0],
        "server_flags": SERVER_FLAGS,
        "texts": len(texts),
        "mean_tokens_per_text": _mean_tokens(model, texts),
        "library_texts_per_s_before": library_before,
        "library_texts_per_s_after": library_after,
        "library_texts_per_s": library,
        "phases": [asdict(main_phase), asdict(overload)],
        "server_vs_library": ratio,
        # Texts per CPU-second of the whole server process (event loop, HTTP, tokenising, model)
        # against the library's: insensitive to other tenants of a shared machine.
        "library_texts_per_cpu_s": library_cpu,
        "server_texts_per_cpu_s": main_phase.ok / server_cpu if server_cpu else None,
        "server_vs_library_per_cpu_s": (main_phase.ok / server_cpu) / library_cpu
        if server_cpu and library_cpu
        else None,
        "main_5xx": server_5xx,
        "overload_other_statuses": overload_other,
        "rss_mib_before": rss_before,
        "rss_mib_after": rss_after,
        "rss_change": rss_change,
        "server_exit_code": exit_code,
    }
    result["checks"] = {
        "zero_5xx": server_5xx == 0,
        "throughput_at_least_85pct_of_library": (ratio or 0) >= 0.85,
        "overload_only_200_and_429": not overload_other,
        "rss_within_10pct": abs(rss_change) <= 0.10,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "server.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (out_dir / "server.md").write_text(_markdown(result), encoding="utf-8")
    log.info("server benchmark: %s", json.dumps(result["checks"]))


# --- inputs ---------------------------------------------------------------------------------------


def msmarco_like_texts(n: int, seed: int = 0) -> list[str]:
    """Alternating short questions and ~60-word passages, from the real data in ../shared/data."""
    cran = SHARED_DATA / "cranfield" / "cran.all.1400"
    if not cran.is_file():
        raise FileNotFoundError(f"{cran} is needed for the server benchmark's passages")
    passages = []
    for record in cran.read_text(encoding="utf-8").split(".I ")[1:]:
        body = record.split("\n.W\n", 1)[-1] if "\n.W\n" in record else ""
        words = body.split()
        if len(words) >= 20:
            passages.append(" ".join(words[:PASSAGE_WORDS]))
    queries = [s for s in read_sts_sentences("test") if 3 <= len(s.split()) <= 16]
    rng = random.Random(seed)
    rng.shuffle(passages)
    rng.shuffle(queries)
    return [(queries if i % 2 == 0 else passages)[i // 2 % 1000] for i in range(n)]


def library_throughput(model: Path, texts: list[str], repeats: int) -> tuple[float, float]:
    """(best texts/s, texts per CPU-second) of ``Encoder.encode`` over ``texts``, with its default
    token budget and with the server's (smaller batches pad less on a short mixed list)."""
    from distilmarco import Encoder

    encoder = Encoder(model, threads=THREADS)
    encoder.encode(texts[:32])
    budget = int(SERVER_FLAGS[SERVER_FLAGS.index("--max-batch-tokens") + 1])
    best = best_cpu = 0.0
    for _ in range(repeats):
        for batch_tokens in (None, budget):
            start, cpu = time.perf_counter(), time.process_time()
            encoder.encode(texts, batch_tokens=batch_tokens)
            best = max(best, len(texts) / (time.perf_counter() - start))
            best_cpu = max(best_cpu, len(texts) / (time.process_time() - cpu))
    return best, best_cpu


def _mean_tokens(model: Path, texts: list[str]) -> float:
    from distilmarco.model.st_format import SentenceModelSpec
    from distilmarco.tokenizer import Tokenizer

    spec = SentenceModelSpec.from_folder(model)
    tok = Tokenizer.from_folder(spec.transformer_folder, spec.max_seq_length, spec.do_lower_case)
    return float(np.mean(tok.count(texts)))


# --- the load generator ---------------------------------------------------------------------------


def run_phase(url: str, texts: list[str], phase: Phase) -> Phase:
    return asyncio.run(_run_phase(url, texts, phase))


async def _run_phase(url: str, texts: list[str], phase: Phase) -> Phase:
    statuses: Counter[str] = Counter()
    latencies: list[float] = []
    tokens = 0
    sent = 0
    deadline = time.perf_counter() + phase.seconds
    host, port = url.removeprefix("http://").split(":")
    bodies = [
        json.dumps({"input": t, "model": "bench", "encoding_format": "float"}).encode()
        for t in texts
    ]

    async def client(c: int) -> None:
        nonlocal tokens, sent
        conn: _Connection | None = None
        i = c * 7919
        while time.perf_counter() < deadline and sent < MAX_REQUESTS:
            sent += 1
            body = bodies[i % len(bodies)]
            i += 1
            start = time.perf_counter()
            try:
                conn = conn or await _Connection.open(host, int(port))
                status, headers, payload = await conn.post("/v1/embeddings", body)
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                statuses[type(exc).__name__] += 1
                if conn is not None:
                    conn.close()
                conn = None
                continue
            statuses[str(status)] += 1
            if status == 200:
                latencies.append(time.perf_counter() - start)
                tokens += _prompt_tokens(payload)
            elif status == 429:
                await asyncio.sleep(min(float(headers.get("retry-after", 1)), 0.1))
            if headers.get("connection") == "close":
                conn.close()
                conn = None
        if conn is not None:
            conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(phase.clients)))
    elapsed = time.perf_counter() - started
    phase.statuses = dict(statuses)
    phase.requests = sum(statuses.values())
    phase.ok = statuses.get("200", 0)
    phase.ok_tokens = tokens
    if latencies:
        phase.p50_ms = float(np.percentile(latencies, 50) * 1000)
        phase.p99_ms = float(np.percentile(latencies, 99) * 1000)
    phase.texts_per_s = phase.ok / elapsed
    phase.tokens_per_s = tokens / elapsed
    log.info("%s: %s", phase.name, json.dumps(asdict(phase)))
    return phase


class _Connection:
    """A minimal keep-alive HTTP/1.1 client: the load generator must cost far less CPU than the
    server it measures (httpx spends several milliseconds of CPU per request)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str):
        self.reader, self.writer, self.host = reader, writer, host

    @classmethod
    async def open(cls, host: str, port: int) -> _Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, host)

    async def post(self, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        await self.writer.drain()
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        if "content-length" not in headers:
            raise ValueError(f"response without Content-Length (status {status})")
        payload = await self.reader.readexactly(int(headers["content-length"]))
        return status, headers, payload

    def close(self) -> None:
        self.writer.close()


_TOKENS = re.compile(rb'"prompt_tokens":\s*(\d+)')


def _prompt_tokens(payload: bytes) -> int:
    found = _TOKENS.search(payload)
    return int(found.group(1)) if found else 0


# --- the server process ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_server(model: Path, port: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "distilmarco", "serve", "-m", str(model), "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--log-level", "warning", *SERVER_FLAGS]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 180.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise RuntimeError(f"the server exited with {proc.returncode}: {err[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"the server at {url} was not healthy after {timeout:.0f} s")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


# --- report ---------------------------------------------------------------------------------------


def _markdown(r: dict) -> str:
    main, over = r["phases"]
    ok = {True: "yes", False: "**no**"}
    lines = [
        "## server — load test of /v1/embeddings (loopback)",
        "",
        f"{r['model']}; {r['texts']} MS MARCO-like texts (questions and ~60-word passages, "
        f"{r['mean_tokens_per_text']:.0f} tokens on average), one text per request, "
        f"server flags `{' '.join(r['server_flags'])}`; {r['cpu_count']} CPUs, "
        f"load average {r['load_average_1m']:.1f} at the end"
        + (" (`--quick`: short phases, indicative only)." if r["quick"] else "."),
        "",
        "| phase | clients | seconds | requests | 200 | other statuses | p50 ms | p99 ms | texts/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in (main, over):
        other = ", ".join(f"{k}: {v}" for k, v in sorted(p["statuses"].items()) if k != "200")
        lines.append(
            f"| {p['name']} | {p['clients']} | {p['seconds']:.0f} | {p['requests']} | {p['ok']} | "
            f"{other or '-'} | {_fmt(p['p50_ms'])} | {_fmt(p['p99_ms'])} | {p['texts_per_s']:.1f} |"
        )
    c = r["checks"]
    lines += [
        "",
        f"- Library (`Encoder.encode`, same texts, same threads, same machine): "
        f"{r['library_texts_per_s']:.1f} texts/s, the better of before the load "
        f"({r['library_texts_per_s_before']:.1f}) and after it ({r['library_texts_per_s_after']:.1f}).",
        f"- Server / library throughput: {r['server_vs_library']:.2f} "
        f"(>= 0.85: {ok[c['throughput_at_least_85pct_of_library']]}). Per CPU-second, which other "
        f"tenants of a shared machine disturb far less: server {_fmt(r['server_texts_per_cpu_s'], 1)}, "
        f"library {_fmt(r['library_texts_per_cpu_s'], 1)} texts, ratio "
        f"{_fmt(r['server_vs_library_per_cpu_s'], 2)}.",
        f"- 5xx under 32 clients: {r['main_5xx']} (zero: {ok[c['zero_5xx']]}); under 4x overload, "
        f"statuses other than 200/429: {r['overload_other_statuses'] or 'none'} "
        f"({ok[c['overload_only_200_and_429']]}).",
        f"- Server RSS: {r['rss_mib_before']:.0f} MiB before, {r['rss_mib_after']:.0f} MiB after "
        f"({r['rss_change'] * 100:+.1f}%; within 10%: {ok[c['rss_within_10pct']]}); "
        f"exit code after SIGTERM {r['server_exit_code']}.",
        "",
    ]
    return "\n".join(lines)


def _fmt(x: float | None, digits: int = 0) -> str:
    return "-" if x is None else f"{x:.{digits}f}"
