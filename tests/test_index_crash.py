"""Crash safety and concurrency of the index, with real processes.

A "zygote" subprocess (this file run as a script) loads the tiny encoder once and forks writer
processes on demand, so each kill cycle costs milliseconds instead of an interpreter start. Writers
log every acknowledged operation (after the call returned, i.e. after COMMIT) to an append-only file;
the test SIGKILLs them at random moments, then reopens the index and checks it against that log.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

KILL_CYCLES = 32


# --- the writer side (runs in the zygote's forked children) ------------------------------------


def doc_text(doc_id: str, version: int, long: bool) -> str:
    words = f"{doc_id} version{version} alpha beta gamma delta words about {doc_id}. "
    return words * (40 if long else 1)


def writer_loop(db: str, model: str, ack: str, seed: int, mode: str) -> None:
    from distilmarco import Encoder
    from distilmarco.index import Index

    rng = random.Random(seed)
    index = Index(db, Encoder(model), busy_timeout=60.0)
    fd = os.open(ack, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    live: dict[str, int] = {}
    for line in Path(ack).read_text().splitlines():
        op, doc_id, version = line.split()
        if op == "deleting":
            continue
        if op == "del":
            live.pop(doc_id, None)
        else:
            live[doc_id] = int(version)
    n = 0
    while True:
        roll = rng.random() if mode == "mixed" else 0.0
        if roll < 0.6 or not live:
            ids = [f"doc{seed}x{n + i}" for i in range(rng.randint(1, 4))]
            n += len(ids)
            longs = [rng.random() < 0.3 for _ in ids]
            index.add(
                ids,
                [doc_text(i, 0, lg) for i, lg in zip(ids, longs, strict=True)],
                [{"seed": seed, "long": lg} for lg in longs],
            )
            lines = [f"add {i} 0" for i in ids]
            live.update(dict.fromkeys(ids, 0))
        elif roll < 0.8:
            doc_id = rng.choice(sorted(live))
            live[doc_id] += 1
            index.upsert([doc_id], [doc_text(doc_id, live[doc_id], rng.random() < 0.3)])
            lines = [f"up {doc_id} {live[doc_id]}"]
        elif roll < 0.95:
            doc_id = rng.choice(sorted(live))
            os.write(fd, f"deleting {doc_id} 0\n".encode())  # may commit without its ack below
            index.delete([doc_id])
            del live[doc_id]
            lines = [f"del {doc_id} 0"]
        else:
            index.optimize()  # catch the ANN file up and rewrite it atomically
            lines = []
        if lines:
            os.write(fd, ("\n".join(lines) + "\n").encode())


def zygote(db: str, model: str, ack: str) -> None:
    import torch

    torch.set_num_threads(1)
    from distilmarco import Encoder

    Encoder(model)  # import and warm everything once; children inherit it
    for line in sys.stdin:
        cmd, *args = line.split()
        if cmd == "fork":
            pid = os.fork()
            if pid == 0:
                try:
                    writer_loop(db, model, ack, int(args[0]), args[1])
                finally:
                    os._exit(1)
            print(pid, flush=True)
        elif cmd == "reap":
            os.waitpid(int(args[0]), 0)
            print("ok", flush=True)


if __name__ == "__main__":
    zygote(*sys.argv[1:4])


# --- the test side -------------------------------------------------------------------------------


class Zygote:
    def __init__(self, db: Path, model: Path, ack: Path) -> None:
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(Path(__file__).parents[1] / "src"),
        }
        self.proc = subprocess.Popen(
            [sys.executable, __file__, str(db), str(model), str(ack)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    def fork(self, seed: int, mode: str = "mixed") -> int:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(f"fork {seed} {mode}\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def kill(self, pid: int) -> None:
        assert self.proc.stdin and self.proc.stdout
        os.kill(pid, signal.SIGKILL)
        self.proc.stdin.write(f"reap {pid}\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "ok"

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


def acknowledged(ack: Path) -> dict[str, int]:
    """Documents that must exist (id -> the last acknowledged version), from complete lines.

    A delete logged as started but never acknowledged may or may not have committed: its document
    is left out (it may be there or not)."""
    live: dict[str, int] = {}
    text = ack.read_text() if ack.exists() else ""
    for line in text.splitlines(keepends=True):
        if not line.endswith("\n"):
            break  # a line cut by the kill: not acknowledged
        op, doc_id, version = line.split()
        if op in ("del", "deleting"):
            live.pop(doc_id, None)
        else:
            live[doc_id] = int(version)
    return live


def check_store(db: Path, encoder, must_have: dict[str, int], rng: random.Random) -> None:  # type: ignore[no-untyped-def]
    from distilmarco.index import Index
    from distilmarco.index.chunking import chunk_spans

    raw = sqlite3.connect(db)
    assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    counts = [
        raw.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
        for t in ("chunks", "vectors", "chunks_fts")
    ]
    assert counts[0] == counts[1] == counts[2], counts
    orphans = raw.execute(
        "SELECT count(*) FROM chunks c LEFT JOIN documents d USING (doc) WHERE d.doc IS NULL"
    ).fetchone()[0]
    assert orphans == 0
    per_doc = dict(
        raw.execute(
            "SELECT d.id, count(c.chunk) FROM documents d LEFT JOIN chunks c USING (doc) GROUP BY d.doc"
        ).fetchall()
    )
    first_chunk = {
        row[0]: (row[1], row[2])
        for row in raw.execute(
            "SELECT d.id, c.start, c.end FROM chunks c JOIN documents d USING (doc) WHERE c.ord = 0"
        )
    }
    raw.close()

    with Index(db, encoder, ann="always") as index:
        docs = {d.id: d for d in index.documents()}
        assert set(per_doc) == set(docs)
        for doc_id, version in must_have.items():
            assert doc_id in docs, f"acknowledged document {doc_id} is missing"
            stored = int(docs[doc_id].text.split()[1].removeprefix("version"))
            assert stored >= version, (doc_id, stored, version)
        for doc in docs.values():  # no partial document: every chunk of its text is there
            spans = chunk_spans(encoder.tokenizer.offsets(doc.text), len(doc.text), index.chunking)
            assert per_doc[doc.id] == len(spans), (doc.id, per_doc[doc.id], len(spans))
            assert doc.text.startswith(doc.id)
        # the ANN cache, loaded from its file (maybe stale or torn) and caught up, agrees with the store
        ann = index.store.caches.ann(persist=False)
        with sqlite3.connect(db) as raw2:
            chunk_ids = {r[0] for r in raw2.execute("SELECT chunk FROM chunks")}
        assert set(ann.keys().tolist()) == chunk_ids
        for doc_id in rng.sample(sorted(must_have), min(5, len(must_have))):
            lexical = index.search(doc_id, 1, mode="bm25")
            assert lexical[0].id == doc_id
            start, end = first_chunk[doc_id]
            query = docs[doc_id].text[start:end]
            for exact in (True, False):  # its first passage finds it with similarity 1
                hits = index.search(query, 3, exact=exact)
                assert doc_id in [h.id for h in hits if h.score > 0.9999], (exact, doc_id, hits)


@pytest.mark.slow
def test_writer_killed_at_random_points(tmp_path: Path, tiny_model_dir: Path, tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    db, ack = tmp_path / "crash.db", tmp_path / "acks.log"
    rng = random.Random(1234)
    zyg = Zygote(db, tiny_model_dir, ack)
    try:
        for cycle in range(KILL_CYCLES):
            pid = zyg.fork(seed=cycle)
            time.sleep(rng.uniform(0.05, 0.45) if cycle else 1.5)  # the first also loads torch
            zyg.kill(pid)
            check_store(db, tiny_encoder, acknowledged(ack), rng)
    finally:
        zyg.close()
    survivors = acknowledged(ack)
    assert len(survivors) >= KILL_CYCLES, "the writers acknowledged too little to test anything"
    from distilmarco.index import Index

    with Index(db, tiny_encoder) as index:  # the next save sweeps temp files of killed saves
        index.add(["final"], [doc_text("final", 0, long=False)])
        index.optimize()
    assert not list(tmp_path.glob("crash.db.ann.*.tmp"))


@pytest.mark.slow
def test_readers_during_writes_and_two_writers(
    tmp_path: Path, tiny_model_dir: Path, tiny_encoder
) -> None:  # type: ignore[no-untyped-def]
    from distilmarco.index import Index

    db, ack = tmp_path / "busy.db", tmp_path / "acks.log"
    with Index(db, tiny_encoder) as index:  # create it with the same model first
        index.add(["seed0"], [doc_text("seed0", 0, long=False)])
    zyg = Zygote(db, tiny_model_dir, ack)
    try:
        writers = [zyg.fork(seed=101, mode="add"), zyg.fork(seed=202, mode="add")]
        reads, last_docs, last_seq = 0, 0, 0
        deadline = time.monotonic() + 4.0
        with Index(db, tiny_encoder) as reader:
            while time.monotonic() < deadline:
                counts = reader.store.counts()  # one snapshot
                assert counts.chunks == counts.vectors == counts.fts
                assert counts.documents >= last_docs and counts.seq >= last_seq
                last_docs, last_seq = counts.documents, counts.seq
                for hit in reader.search("alpha beta words", 5):
                    assert hit.id in reader  # writers only add: every hit must exist
                    assert hit.passage == reader.get(hit.id).text[hit.start : hit.end]
                reads += 1
        for pid in writers:
            zyg.kill(pid)
    finally:
        zyg.close()
    assert reads > 5
    must = acknowledged(ack)
    ids_by_writer = {s: [i for i in must if i.startswith(f"doc{s}x")] for s in (101, 202)}
    assert all(ids_by_writer.values()), "both writers must have committed documents"
    check_store(db, tiny_encoder, must, random.Random(0))


def test_second_writer_waits_then_fails_clearly(tmp_path: Path, tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    from distilmarco.errors import IndexStoreError
    from distilmarco.index import Index

    db = tmp_path / "locked.db"
    with Index(db, tiny_encoder, busy_timeout=0.2) as index:
        index.add(["a"], ["one"])
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        start = time.monotonic()
        with pytest.raises(IndexStoreError, match="another process is writing"):
            index.add(["b"], ["two"])
        assert time.monotonic() - start >= 0.15  # it waited for the busy timeout
        holder.execute("ROLLBACK")
        holder.close()
        index.add(["b"], ["two"])
        assert index.count() == 2
        assert sorted(index.ids()) == ["a", "b"]


def test_reads_do_not_wait_behind_a_waiting_writer(tmp_path: Path, tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    import threading

    from distilmarco.index import Index

    db = tmp_path / "rw.db"
    with Index(db, tiny_encoder, busy_timeout=10.0) as index:
        index.add(["a"], [doc_text("a", 0, long=False)])
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        writer = threading.Thread(target=lambda: index.add(["b"], [doc_text("b", 0, long=False)]))
        writer.start()
        time.sleep(0.3)  # the writer thread is now waiting for the lock
        start = time.monotonic()
        assert index.count() == 1 and index.search("alpha", 1)[0].id == "a"
        assert time.monotonic() - start < 1.0  # answered while the writer still waits
        assert writer.is_alive()
        holder.execute("ROLLBACK")
        holder.close()
        writer.join(timeout=10)
        assert index.count() == 2
