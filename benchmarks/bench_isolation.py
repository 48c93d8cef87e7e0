"""Isolation under stress: one bad input, abandoned request or huge request must not hurt others.

The server runs in its own process on 127.0.0.1, built like ``distilmarco serve`` but with a
backend that returns NaN for every row holding one word (as an fp16 or int8 overflow would).
Figures, each phase bounded in time:

- poisoned: 12 innocent clients and 2 clients sending the poisoned word; innocent errors (must be
  0) and the poisoned clients' statuses;
- abandoned: five 100-text requests whose clients hang up after 50 ms, then a 1-text request:
  texts the server embedded meanwhile and the 1-text latency;
- head of line: a 1-text request sent 0.5 s after a 1024-text one: its latency against the big
  one's (with ``BENCH_BASELINE_SRC`` set to another tree's ``src``, the same against that code);
- overload: 4 clients of 1-8 short texts (steady), then 16 (4x) against a server whose
  ``--max-queue-wait`` is the steady median: accepted p99 against the steady p99 (target <= 2x);
- soak: unbroken mixed load (10 minutes; ``--quick``: 1), the server's RSS every 5 s.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.bench_server import (
    THREADS,
    _Connection,
    _free_port,
    _rss_mib,
    _wait_healthy,
    msmarco_like_texts,
)
from benchmarks.common import ROOT, minilm_folder, msmarco_like_model

log = logging.getLogger(__name__)
POISON = "zebra"


def serve(model: str, port: str, poison: str, settings_json: str) -> None:
    """The server process; its backend gives NaN for rows that hold ``poison``'s token."""
    import uvicorn

    from distilmarco import Encoder
    from distilmarco.server import ServerSettings, create_app

    encoder = Encoder(model, threads=THREADS)
    token = int(encoder.tokenizer.encode([poison]).ids[0][1])
    encoder.backend = _Poisoned(encoder.backend, token)
    known = {f.name for f in dataclasses.fields(ServerSettings)}  # an older tree has fewer
    wanted = json.loads(settings_json)
    settings = ServerSettings(**{k: v for k, v in wanted.items() if k in known})
    uvicorn.run(
        create_app(settings, encoder), host="127.0.0.1", port=int(port), log_level="warning"
    )


class _Poisoned:
    def __init__(self, inner: Any, token: int) -> None:
        self.inner, self.token = inner, token

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def embed(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        out = np.array(self.inner.embed(ids, mask), dtype=np.float32)
        out[(ids == self.token).any(axis=1)] = np.nan
        return out


class Server:
    def __init__(self, model: Path, settings: dict[str, Any], src: Path | None = None) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src or ROOT / "src"), str(ROOT)])}
        code = "import sys; from benchmarks.bench_isolation import serve; serve(*sys.argv[1:])"
        args = [str(model), str(self.port), POISON, json.dumps(settings)]
        # its log goes to a file: a pipe nobody reads would fill and stall the server
        self.log = tempfile.TemporaryFile("w+b")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen([sys.executable, "-c", code, *args], env=env, stderr=self.log)
        _wait_healthy(self.url, self.proc)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
        finally:
            self.log.seek(0)
            errors = [line for line in self.log.read().decode().splitlines() if "ERROR" in line]
            if errors:
                log.warning("server errors (%d), last: %s", len(errors), errors[-3:])
            self.log.close()

    def metric(self, name: str) -> float:
        import httpx

        for line in httpx.get(self.url + "/metrics", timeout=30).text.splitlines():
            if line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
        raise KeyError(name)


async def _post(conn: _Connection, texts: list[str]) -> int:
    return (await _post_full(conn, texts))[0]


async def _post_full(conn: _Connection, texts: list[str]) -> tuple[int, dict[str, str]]:
    body = json.dumps({"input": texts, "model": "bench"}).encode()
    status, headers, _ = await conn.post("/v1/embeddings", body)
    return status, headers


async def _clients(
    url: str, makers: list[Any], seconds: float
) -> tuple[list[Counter[str]], list[list[float]]]:
    """One closed-loop client per ``maker`` (rng -> texts); statuses and 200-latencies each.
    A client told 429 waits the Retry-After it was given, as standard clients do."""
    host, port = url.removeprefix("http://").split(":")
    deadline = time.perf_counter() + seconds
    statuses: list[Counter[str]] = [Counter() for _ in makers]
    latencies: list[list[float]] = [[] for _ in makers]

    async def client(c: int) -> None:
        rng = random.Random(c)
        conn: _Connection | None = None
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            try:
                conn = conn or await _Connection.open(host, int(port))
                status, headers = await _post_full(conn, makers[c](rng))
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                statuses[c][type(exc).__name__] += 1
                conn = None
                continue
            statuses[c][str(status)] += 1
            if status == 200:
                latencies[c].append(time.perf_counter() - start)
            elif status == 429:  # as a well-behaved client does
                conn.close()  # the server may close an idle connection while this one waits
                conn = None
                await asyncio.sleep(float(headers.get("retry-after", 1)))
        if conn is not None:
            conn.close()

    await asyncio.gather(*(client(c) for c in range(len(makers))))
    return statuses, latencies


def _sum(counters: list[Counter[str]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for c in counters:
        total.update(c)
    return dict(total)


def poisoned(model: Path, texts: list[str], seconds: float) -> dict[str, Any]:
    server = Server(model, {"warmup": True, "max_queue_wait_s": 60.0})
    try:
        innocent = [lambda r: r.sample(texts, r.randint(1, 4)) for _ in range(12)]
        bad = [lambda r: [texts[0], f"a {POISON} walks by", texts[1]] for _ in range(2)]
        statuses, _ = asyncio.run(_clients(server.url, innocent + bad, seconds))
    finally:
        server.stop()
    good = _sum(statuses[:12])
    return {
        "seconds": seconds,
        "innocent_statuses": good,
        "innocent_errors": sum(n for s, n in good.items() if s != "200"),
        "poisoned_statuses": _sum(statuses[12:]),
    }


def abandoned(model: Path, texts: list[str]) -> dict[str, Any]:
    server = Server(model, {"warmup": True, "max_queue_wait_s": 600.0})  # fairness, not shedding
    try:
        before = server.metric("distilmarco_inputs_total")

        async def run() -> tuple[float, int]:
            host, port = server.url.removeprefix("http://").split(":")
            gone = []
            for i in range(5):
                conn = await _Connection.open(host, int(port))
                body = json.dumps({"input": texts[i * 100 : i * 100 + 100], "model": "b"})
                head = (
                    f"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                    f"application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                )
                conn.writer.write(head.encode() + body.encode())
                await conn.writer.drain()
                gone.append(conn)
            await asyncio.sleep(0.05)
            for conn in gone:
                conn.close()  # the clients hang up
            start = time.perf_counter()
            conn = await _Connection.open(host, int(port))
            status = await _post(conn, ["one small question"])
            conn.close()
            return time.perf_counter() - start, status

        latency, status = asyncio.run(run())
        time.sleep(1.0)
        embedded = server.metric("distilmarco_inputs_total") - before
    finally:
        server.stop()
    return {
        "abandoned_texts": 500,
        "texts_embedded": embedded,
        "one_text_s": latency,
        "one_text_status": status,
    }


def head_of_line(model: Path, texts: list[str], src: Path | None) -> dict[str, Any]:
    # fairness only: no shedding (a step of the big request can outlast the default wait bound)
    settings = {"warmup": True, "max_queue_tokens": 1 << 20, "max_queue_wait_s": 600.0}
    server = Server(model, settings, src)
    try:

        async def run() -> tuple[float, float]:
            host, port = server.url.removeprefix("http://").split(":")
            big_conn = await _Connection.open(host, int(port))
            small_conn = await _Connection.open(host, int(port))

            async def timed(conn: _Connection, batch: list[str], delay: float) -> float:
                await asyncio.sleep(delay)
                start = time.perf_counter()
                status = await _post(conn, batch)
                if status != 200:
                    raise RuntimeError(f"head-of-line request answered {status}")
                return time.perf_counter() - start

            big, small = await asyncio.gather(
                timed(big_conn, (texts * 4)[:1024], 0.0), timed(small_conn, ["one text"], 0.5)
            )
            return big, small

        big, small = asyncio.run(run())
    finally:
        server.stop()
    return {"big_1024_texts_s": big, "one_text_s": small}


def overload(model: Path, texts: list[str], seconds: float) -> dict[str, Any]:
    short = [t for t in texts if len(t.split()) <= 16]

    def make(r: random.Random) -> list[str]:
        return r.sample(short, r.randint(1, 8))

    server = Server(model, {"warmup": True})
    try:
        statuses, lat = asyncio.run(_clients(server.url, [make] * 4, seconds))
    finally:
        server.stop()
    steady = [x for c in lat for x in c]
    steady_p99 = float(np.percentile(steady, 99))
    # the bound covers the model's queue only (not HTTP, tokenising, JSON): the steady median
    bound = round(float(np.percentile(steady, 50)), 3)
    server = Server(model, {"warmup": True, "max_queue_wait_s": bound})
    try:
        over_statuses, over_lat = asyncio.run(_clients(server.url, [make] * 16, seconds))
    finally:
        server.stop()
    accepted = [x for c in over_lat for x in c]
    over_p99 = float(np.percentile(accepted, 99))
    return {
        "seconds": seconds,
        "steady_clients": 4,
        "steady_statuses": _sum(statuses),
        "steady_p50_s": float(np.percentile(steady, 50)),
        "steady_p99_s": steady_p99,
        "max_queue_wait_s": bound,
        "overload_clients": 16,
        "overload_statuses": _sum(over_statuses),
        "overload_p50_s": float(np.percentile(accepted, 50)),
        "overload_p99_s": over_p99,
        "p99_ratio": over_p99 / steady_p99,
    }


def soak(model: Path, texts: list[str], seconds: float) -> dict[str, Any]:
    server = Server(model, {"warmup": True})
    samples: list[tuple[float, float]] = []

    def mixed(r: random.Random) -> list[str]:
        return r.sample(texts, r.choice([1, 2, 4, 8, 16, 64]))

    async def run() -> tuple[list[Counter[str]], list[list[float]]]:
        start = time.perf_counter()

        async def sample() -> None:
            while time.perf_counter() - start < seconds:
                samples.append((time.perf_counter() - start, _rss_mib(server.proc.pid)))
                await asyncio.sleep(5.0)

        sampler = asyncio.ensure_future(sample())
        out = await _clients(server.url, [mixed] * 16, seconds)
        await sampler
        return out

    try:
        statuses, _ = asyncio.run(run())
        time.sleep(2.0)
        idle = _rss_mib(server.proc.pid)
    finally:
        server.stop()
    rss = [r for _, r in samples]
    half = len(rss) // 2
    return {
        "seconds": seconds,
        "statuses": _sum(statuses),
        "rss_mib": [[round(t), round(r)] for t, r in samples],
        "rss_first_mib": rss[0],
        "rss_max_first_half_mib": max(rss[: max(half, 1)]),
        "rss_max_second_half_mib": max(rss[half:]),
        "rss_last_mib": rss[-1],
        "rss_idle_after_mib": idle,
    }


def main(out_dir: Path, quick: bool) -> None:
    logging.getLogger("httpx").setLevel(logging.WARNING)
    model, model_name = (
        (minilm_folder(), "all-MiniLM-L6-v2 (6x384, real weights)")
        if quick
        else (msmarco_like_model(), "msmarco-like DistilBERT (6x768, random weights)")
    )
    texts = msmarco_like_texts(600)
    baseline = os.environ.get("BENCH_BASELINE_SRC")
    result: dict[str, Any] = {
        "quick": quick,
        "model": model_name,
        "cpu_count": os.cpu_count(),
        "cpu": _cpu(),
    }
    result["poisoned"] = poisoned(model, texts, 8.0 if quick else 20.0)
    result["abandoned"] = abandoned(model, texts)
    result["head_of_line"] = head_of_line(model, texts, None)
    if baseline:
        result["head_of_line_baseline"] = head_of_line(model, texts, Path(baseline))
        result["baseline_src"] = baseline
        result["baseline_label"] = os.environ.get("BENCH_BASELINE_LABEL", baseline)
    result["overload"] = overload(model, texts, 8.0 if quick else 20.0)
    result["soak"] = soak(model, texts, 60.0 if quick else 600.0)
    result["load_average_1m"] = os.getloadavg()[0]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "isolation.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (out_dir / "isolation.md").write_text(_markdown(result), encoding="utf-8")


def _markdown(r: dict[str, Any]) -> str:
    p, a, h, o, s = (r[k] for k in ("poisoned", "abandoned", "head_of_line", "overload", "soak"))
    base = r.get("head_of_line_baseline")
    lines = [
        "## isolation — one client must not hurt the others (loopback)",
        "",
        f"{r['model']}; {r['cpu_count']} CPUs ({r.get('cpu', '?')}), shared with other jobs, "
        f"load average {r['load_average_1m']:.1f} at the end"
        + (" (`--quick`: short phases, indicative only)." if r["quick"] else ".")
        + (f" Baseline tree: {r['baseline_label']}." if r.get("baseline_label") else ""),
        "",
        f"- Poisoned input (backend NaN for rows holding one word), 12 innocent + 2 poisoned "
        f"clients for {p['seconds']:.0f} s: innocent errors **{p['innocent_errors']}** of "
        f"{sum(p['innocent_statuses'].values())} requests; poisoned clients got "
        f"{p['poisoned_statuses']}.",
        f"- Abandoned: five 100-text requests whose clients hung up after 50 ms: "
        f"{a['texts_embedded']:.0f} texts embedded (of 500, plus the 1-text probe); a 1-text "
        f"request right after waited {a['one_text_s']:.2f} s (status {a['one_text_status']}).",
        f"- Head of line: 1 text sent 0.5 s after a 1024-text request: {h['one_text_s']:.2f} s "
        f"(the big one took {h['big_1024_texts_s']:.1f} s)"
        + (
            f"; with the baseline tree: {base['one_text_s']:.2f} s "
            f"(big {base['big_1024_texts_s']:.1f} s)."
            if base
            else "."
        ),
        f"- Overload: steady {o['steady_clients']} clients p99 {o['steady_p99_s'] * 1000:.0f} ms; "
        f"{o['overload_clients']} clients (4x) with `--max-queue-wait {o['max_queue_wait_s']}`: "
        f"accepted p99 {o['overload_p99_s'] * 1000:.0f} ms = **{o['p99_ratio']:.2f}x** steady "
        f"(target <= 2x); statuses {o['overload_statuses']}.",
        f"- Soak, {s['seconds'] / 60:.0f} min of unbroken mixed load (16 clients, 1-64 texts): RSS "
        f"{s['rss_first_mib']:.0f} MiB first, max {s['rss_max_first_half_mib']:.0f} in the first "
        f"half and {s['rss_max_second_half_mib']:.0f} in the second, {s['rss_last_mib']:.0f} last, "
        f"{s['rss_idle_after_mib']:.0f} idle after; median per minute "
        f"{', '.join(str(m) for m in _per_minute(s['rss_mib']))} MiB; statuses {s['statuses']} "
        "(an IncompleteReadError is a client that reused a connection the server had closed "
        "while it waited out a Retry-After).",
        "",
    ]
    return "\n".join(lines)


def _per_minute(samples: list[list[float]]) -> list[int]:
    minutes = sorted({int(t // 60) for t, _ in samples})
    return [round(float(np.median([r for t, r in samples if int(t // 60) == m]))) for m in minutes]


def _cpu() -> str:
    """The CPU's model name and its wide-vector flags, from /proc/cpuinfo (Linux)."""
    try:
        info = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return "unknown CPU"
    name = next(
        (ln.split(":", 1)[1].strip() for ln in info.splitlines() if "model name" in ln), "?"
    )
    flags = next(
        (ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), []
    )
    wide = [f for f in ("avx2", "avx512f", "avx512_vnni", "amx_tile") if f in flags]
    return f"{name}, {' '.join(wide) or 'no AVX2'}"
