"""Milvus as the index's store, on a local stand-in: ``index push`` rate and search p50 per mode
against the SQLite index on the same passages and vectors.

The server is ``milvus-lite server`` (pure Python, one process) on loopback, started here and ended
by its pid: its figures are a regression number for this code path (client, batching, filters,
grouping), not what a Milvus cluster does. Vectors are synthetic clustered 768-d unit vectors (no
model runs: push never embeds), passages MS MARCO-sized runs of real English words, written as an
``embed --ray`` folder. Both stores are timed through the same ``Storage``/``Search`` calls, queries
interleaved between them.

    python -m benchmarks.run --only milvus [--quick]
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.bench_index import clustered
from benchmarks.common import cpu_description
from benchmarks.workloads import word_pool

DIM = 768
WORDS_PER_PASSAGE = 56  # MS MARCO passages' mean length in words
META = {"model_id": "bench/random-768", "revision": "", "dimension": str(DIM),
        "similarity": "cosine", "model_name": "random-768", "fingerprint": "sha256:bench",
        "backend": "torch", "precision": "fp32"}  # fmt: skip
MODES = ("dense", "bm25", "hybrid")


def write_folder(folder: Path, n: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """An embeddings folder of ``n`` one-passage documents; returns their texts and vectors."""
    rng = np.random.default_rng(seed)
    words = np.asarray(word_pool())
    texts = [" ".join(rng.choice(words, WORDS_PER_PASSAGE)) for _ in range(n)]
    vectors = clustered(n, DIM, seed)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    per_file = max(1, n // 4)
    for i, lo in enumerate(range(0, n, per_file)):
        part = range(lo, min(n, lo + per_file))
        table = pa.table({
            "id": [f"d{j}#0" for j in part], "doc_id": [f"d{j}" for j in part],
            "passage": pa.array([0] * len(part), pa.int32()),
            "passages": pa.array([1] * len(part), pa.int32()),
            "start": pa.array([0] * len(part), pa.int32()),
            "end": pa.array([len(texts[j]) for j in part], pa.int32()),
            "text": [texts[j] for j in part], "document": [texts[j] for j in part],
            "metadata": [json.dumps({"shard": j % 10}) for j in part],
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors[lo : lo + len(part)].ravel()), DIM),
            "tokens": pa.array([80] * len(part), pa.int32()),
            "truncated": [False] * len(part),
        })  # fmt: skip
        pq.write_table(table, folder / f"part-{i}.parquet")
        files.append({"path": f"part-{i}.parquet", "rows": len(part)})
    manifest = {"format": "distilmarco-embeddings/1", "model": META["model_id"], "revision": None,
                "backend": "torch", "precision": "fp32", "dimension": DIM, "similarity": "cosine",
                "normalized": False, "model_meta": META, "chunking": None,
                "input": {"path": "synthetic", "fingerprint": "sha256:0", "rows": n},
                "files": files, "rows": n, "documents": n}  # fmt: skip
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return texts, vectors


def start_server(data: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``milvus-lite server`` on a free loopback port, once it answers."""
    from pymilvus import MilvusClient
    from pymilvus.exceptions import MilvusException

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(data), "--host",
         "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("milvus-lite server exited at start")
        try:
            MilvusClient(uri=f"http://127.0.0.1:{port}", timeout=2).list_collections()
            return proc, f"milvus://127.0.0.1:{port}"
        except MilvusException:
            time.sleep(0.2)
    proc.terminate()
    raise RuntimeError("milvus-lite server did not answer within 60 s")


def sqlite_load(folder: Path, db: Path) -> Any:
    """The same rows into a SQLite index through ``Storage.put``, read from the same Parquet."""
    from distilmarco.index.milvus.push import EmbeddingsFolder
    from distilmarco.index.sqlite import SqliteStorage
    from distilmarco.index.storage import ChunkRow, DocumentRow, VectorSpace

    source = EmbeddingsFolder.open(folder)
    store = SqliteStorage(db, lambda: VectorSpace(DIM, "cosine"), ann="never")
    for rows in source.batches(1000):
        docs = [DocumentRow(r.doc_id, r.document, r.metadata_json, r.content_hash,
                            (ChunkRow(r.start, r.end, r.vector),)) for r in rows]  # fmt: skip
        store.put(docs, replace=True, meta=META)
    return store


def p50_ms(times: list[float]) -> float:
    return float(np.median(times) * 1000)


def main(out_dir: Path, quick: bool) -> None:
    from distilmarco.index.milvus.push import push
    from distilmarco.index.milvus.storage import MilvusStorage
    from distilmarco.index.storage import VectorSpace

    n, queries = (2_000, 30) if quick else (20_000, 100)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "vectors"
        texts, vectors = write_folder(folder, n)
        proc, server = start_server(Path(tmp) / "milvus")
        try:
            t = time.perf_counter()
            report = push(folder, f"{server}/bench", batch_rows=1000)
            milvus_push = time.perf_counter() - t
            t = time.perf_counter()
            sqlite = sqlite_load(folder, Path(tmp) / "bench.db")
            sqlite_push = time.perf_counter() - t
            milvus = MilvusStorage(f"{server}/bench", lambda: VectorSpace(DIM, "cosine"))
            milvus.optimize()  # seal what the server holds in memory, as after a bulk load
            rng = np.random.default_rng(1)
            picks = rng.choice(n, queries, replace=False)
            qv = vectors[picks] + 0.05 * rng.standard_normal((queries, DIM)).astype(np.float32)
            qv /= np.linalg.norm(qv, axis=1, keepdims=True)
            qt = [" ".join(texts[i].split()[:6]) for i in picks]
            stores = {"sqlite": sqlite.searcher, "milvus": milvus.searcher}
            for s in stores.values():  # warm: caches built, connections open
                s.dense(qv[0], 10), s.bm25(qt[0], 10), s.hybrid(qt[0], qv[0], 10)
            times: dict[str, dict[str, list[float]]] = {k: {m: [] for m in MODES} for k in stores}
            agree = {m: 0.0 for m in MODES}
            for v, text in zip(qv, qt, strict=True):
                found: dict[str, dict[str, list[str]]] = {k: {} for k in stores}
                for name, s in stores.items():  # interleaved: both see the same load
                    for mode in MODES:
                        t = time.perf_counter()
                        if mode == "dense":
                            hits = s.dense(v, 10)
                        elif mode == "bm25":
                            hits = s.bm25(text, 10)
                        else:
                            hits = s.hybrid(text, v, 10)
                        times[name][mode].append(time.perf_counter() - t)
                        found[name][mode] = [h.id for h in hits]
                for mode in MODES:
                    a, b = found["sqlite"][mode], found["milvus"][mode]
                    agree[mode] += len(set(a) & set(b)) / max(1, len(a)) / queries
            milvus.close()
            sqlite.close()
        finally:
            proc.terminate()  # our server's pid only
            proc.wait(timeout=30)
    result = {
        "cpu": cpu_description(),
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "quick": quick,
        "passages": n,
        "dimension": DIM,
        "queries": queries,
        "push_rows_per_s": {"milvus": report.rows / milvus_push, "sqlite": n / sqlite_push},
        "search_p50_ms": {k: {m: p50_ms(v) for m, v in t.items()} for k, t in times.items()},
        "top10_overlap": agree,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "milvus.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "milvus.md").write_text(render(result) + "\n")


def render(r: dict[str, Any]) -> str:
    push, p50 = r["push_rows_per_s"], r["search_p50_ms"]
    lines = [
        "## Milvus store (local stand-in: a regression number)",
        "",
        f"`milvus-lite server` (pure Python, one process) on loopback, {r['passages']:,} passages "
        f"of {WORDS_PER_PASSAGE} words with synthetic {r['dimension']}-d vectors, pushed from an "
        f"embeddings folder; {r['queries']} queries, k=10, interleaved between the stores, query "
        "vectors given (no model). These figures track this code path across changes; a Milvus "
        "cluster's throughput and latency are its own. "
        f"CPU: {r['cpu']}; load average {r['load_before'][0]:.1f} before, "
        f"{r['load_after'][0]:.1f} after (the machine was shared with other jobs)"
        + ("; `--quick` sizes." if r["quick"] else "."),
        "",
        "| store | push rows/s | dense p50 ms | bm25 p50 ms | hybrid p50 ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, label in (("sqlite", "SQLite index (exact matrix, FTS5)"),
                        ("milvus", "Milvus (milvus-lite, AUTOINDEX)")):  # fmt: skip
        t = p50[name]
        lines.append(
            f"| {label} | {push[name]:,.0f} | {t['dense']:.1f} | {t['bm25']:.1f} | {t['hybrid']:.1f} |"
        )
    o = r["top10_overlap"]
    lines += [
        "",
        f"Top-10 overlap Milvus vs SQLite: dense {o['dense']:.3f}, bm25 {o['bm25']:.3f} "
        f"(different analysers: no stemming, Lucene idf), hybrid {o['hybrid']:.3f}.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main(Path(__file__).parent / "results", "--quick" in sys.argv)
