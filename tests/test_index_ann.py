"""The HNSW cache: damaged, stale or foreign files are detected and rebuilt; recall on synthetic data."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from distilmarco.errors import IndexStoreError, InputError
from distilmarco.index import Index
from distilmarco.index.ann import AnnConfig, AnnEvent, AnnFileStats, AnnIndex, read_stamp
from distilmarco.index.ann.header import MAGIC, read_trailer

FLOAT16_MARGIN = 2e-3  # what rescoring allows float16 copies (``rescore.MARGIN``)

N_DOCS = 300


def doc_texts(n: int, offset: int = 0) -> list[str]:
    rng = np.random.default_rng(offset)
    vocab = [
        "air",
        "wing",
        "lift",
        "drag",
        "flow",
        "shock",
        "wave",
        "heat",
        "plate",
        "boundary",
        "layer",
        "pressure",
        "jet",
        "nozzle",
    ]
    return [f"doc {i + offset} " + " ".join(rng.choice(vocab, 12)) for i in range(n)]


QUERIES = ["lift on a wing", "shock wave pressure", "heat flow in a plate", "jet nozzle drag"]


def results(ix: Index, exact: bool) -> list[list[tuple[str, float]]]:
    return [[(h.id, round(h.score, 5)) for h in ix.search(q, 10, exact=exact)] for q in QUERIES]


@pytest.fixture
def built(tmp_path: Path, tiny_encoder) -> Path:  # type: ignore[no-untyped-def]
    db = tmp_path / "ann.db"
    with Index(db, tiny_encoder) as ix:
        ix.add([f"d{i}" for i in range(N_DOCS)], doc_texts(N_DOCS))
        ix.optimize()
    assert AnnIndex.load(db.with_name("ann.db.ann")).stamp.count == N_DOCS
    return db


def reopen_and_compare(  # type: ignore[no-untyped-def]
    db: Path, encoder, expect_event: AnnEvent, reason: str = ""
) -> None:
    with Index(db, encoder) as ix:
        exact = results(ix, exact=True)
        approx = results(ix, exact=False)
        caches = ix.store.caches
        assert caches.last_ann_event is expect_event, (
            caches.last_ann_event,
            caches.last_ann_reason,
        )
        if expect_event is AnnEvent.REBUILT:
            assert reason in str(caches.last_ann_reason), caches.last_ann_reason
        else:
            assert caches.last_ann_reason is None
        # HNSW is approximate (and its multi-threaded build is not deterministic): near-equal
        # results, and every document it returns scored exactly as exact search scores it.
        scored = {(n, *pair) for n, result in enumerate(exact) for pair in result}
        found = {(n, *pair) for n, result in enumerate(approx) for pair in result}
        assert len(found & scored) >= 0.9 * len(scored)
        for n, query in enumerate(QUERIES):
            full = {h.id: round(h.score, 5) for h in ix.search(query, 10_000, exact=True)}
            assert all(full[i] == score for i, score in approx[n])
        ann = ix.store.caches.ann()
        chunks = ix.store.counts().chunks
        assert len(ann) == chunks and ann.seq == ix.store.counts().seq
    # the file on disk was repaired (or kept) and now covers the store
    stamp = AnnIndex.load(db.with_name(db.name + ".ann")).stamp
    assert stamp.count == chunks


@pytest.mark.parametrize("damage", ["truncate", "flip_payload", "flip_header", "garbage", "empty"])
def test_damaged_ann_file_is_rebuilt(built: Path, tiny_encoder, damage: str) -> None:  # type: ignore[no-untyped-def]
    path = built.with_name(built.name + ".ann")
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip_payload":
        data[len(data) * 3 // 4] ^= 0xFF
    elif damage == "flip_header":
        data[20] = ord("}")
    elif damage == "garbage":
        data = bytearray(b"PK\x03\x04 definitely not ours" * 100)
    else:
        data = bytearray()
    path.write_bytes(bytes(data))
    with pytest.raises(IndexStoreError):
        AnnIndex.load(path)
    reopen_and_compare(built, tiny_encoder, AnnEvent.REBUILT, f"ANN file {path}")


def test_damaged_stored_vectors_are_found_before_any_search_and_rebuilt(  # type: ignore[no-untyped-def]
    built: Path, tiny_encoder
) -> None:
    path = built.with_name(built.name + ".ann")
    # read in blocks smaller than a part, whose edges fall inside the checksummed sections
    chunked = AnnConfig(read_chunk_bytes=4_093)
    sound = AnnIndex.load(path, chunked)
    np.testing.assert_array_equal(
        sound.search(np.eye(sound.dimension, dtype=np.float32)[0], 10),
        AnnIndex.load(path).search(np.eye(sound.dimension, dtype=np.float32)[0], 10),
    )
    with open(path, "rb") as f:
        part = read_trailer(path, f).header.parts[0]
    data = bytearray(path.read_bytes())
    data[(part.vectors_at + part.end) // 2] ^= 0xFF  # inside a stored vector
    path.write_bytes(bytes(data))
    for config in (AnnConfig(), chunked):
        with pytest.raises(IndexStoreError, match="vector checksum mismatch"):
            AnnIndex.load(path, config)
    reopen_and_compare(built, tiny_encoder, AnnEvent.REBUILT, "vector checksum mismatch")
    reopen_and_compare(built, tiny_encoder, AnnEvent.LOADED)  # the rebuilt file was saved


def test_missing_ann_file_is_rebuilt(built: Path, tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    built.with_name(built.name + ".ann").unlink()
    reopen_and_compare(built, tiny_encoder, AnnEvent.REBUILT, "missing")


def test_stale_ann_file_is_caught_up(built: Path, tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    path = built.with_name(built.name + ".ann")
    before = path.read_bytes()
    with Index(built, tiny_encoder, ann="never") as ix:  # writes without touching the ANN file
        ix.add([f"n{i}" for i in range(40)], doc_texts(40, offset=1000))
        ix.delete([f"d{i}" for i in range(0, N_DOCS, 3)])
        ix.upsert(["d1"], ["lift on a wing, rewritten"])
    assert path.read_bytes() == before
    assert AnnIndex.load(path).seq == 1
    reopen_and_compare(built, tiny_encoder, AnnEvent.LOADED)


def test_foreign_or_future_ann_file_is_rebuilt(built: Path, tmp_path: Path, tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    other = tmp_path / "other.db"
    with Index(other, tiny_encoder) as ix:
        ix.add([f"d{i}" for i in range(N_DOCS)], doc_texts(N_DOCS))
        ix.optimize()
    shutil.copy(other.with_name("other.db.ann"), built.with_name(built.name + ".ann"))
    reopen_and_compare(built, tiny_encoder, AnnEvent.REBUILT, "belongs to another index")

    backup = tmp_path / "backup.db"
    with Index(built) as ix:  # a consistent copy of the store at its current sequence
        ix.store.db.backup(backup)
    with Index(built, tiny_encoder) as ix:
        ix.add(["late"], ["a document added after the backup"])
        ix.optimize()
    shutil.copy(built.with_name(built.name + ".ann"), backup.with_name("backup.db.ann"))
    reopen_and_compare(backup, tiny_encoder, AnnEvent.REBUILT, "claims sequence 2 > the store's 1")


def clustered(n: int, dim: int, clusters: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    points = centres[rng.integers(0, clusters, n)] + 0.5 * rng.standard_normal((n, dim))
    queries = centres[rng.integers(0, clusters, 200)] + 0.5 * rng.standard_normal((200, dim))
    unit = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    return unit(points), unit(queries)


@pytest.mark.slow
@pytest.mark.parametrize("panorama", [False, True])
def test_recall_on_50k_synthetic_clustered_vectors(tmp_path: Path, panorama: bool) -> None:
    # 6 MB of vectors: plain parts unless the rotation threshold is lowered
    config = AnnConfig(rotation_min_bytes=1 if panorama else 64 << 20)
    points, queries = clustered(50_000, 32, 500, seed=7)  # low dimension keeps the build fast
    keys = np.arange(10, 50_010, dtype=np.int64)  # not 0-based: keys are chunk ids
    ann = AnnIndex(32, "cosine", store_id="synthetic", config=config)
    ann.add(keys, points)
    assert (ann.rotation is not None) == panorama
    dead = keys[::10]  # deletions, as the store's tombstones would replay them
    ann.remove(dead)
    alive = np.ones(len(keys), bool)
    alive[::10] = False
    sims = queries @ points.T
    sims[:, ~alive] = -np.inf
    truth = keys[np.argsort(-sims, axis=1)[:, :10]]
    found = [ann.search(q, 10) for q in queries]
    recall = np.mean(
        [len(set(f.tolist()) & set(t.tolist())) / 10 for f, t in zip(found, truth, strict=True)]
    )
    assert recall >= 0.95, recall
    assert not set(np.concatenate(found).tolist()) & set(dead.tolist())
    ann.seq = 5
    ann.save(tmp_path / "x.ann")
    again = AnnIndex.load(tmp_path / "x.ann")
    assert (again.seq, len(again)) == (5, 45_000)
    np.testing.assert_array_equal(again.search(queries[0], 10), ann.search(queries[0], 10))


def test_stats_reads_the_stamp_without_loading(  # type: ignore[no-untyped-def]
    built: Path, tiny_encoder, capsys: pytest.CaptureFixture[str]
) -> None:
    from distilmarco.cli import main

    path = built.with_name(built.name + ".ann")
    assert read_stamp(path) == AnnIndex.load(path).stamp
    with Index(built, tiny_encoder) as ix:
        assert ix.stats().ann == AnnFileStats(
            file=str(path), present=True, valid=True, seq=1, vectors=N_DOCS, stale_by=0
        )
    # the JSON keeps only the fields that apply, as it did when this was a dict
    assert main(["index", "stats", "--index", str(built), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ann"] == {
        "file": str(path),
        "present": True,
        "valid": True,
        "seq": 1,
        "vectors": N_DOCS,
        "stale_by": 0,
    }
    data = path.read_bytes()
    path.write_bytes(data[:100] + data[110:])  # ten bytes gone, the trailer intact
    with pytest.raises(IndexStoreError, match="wrong length"):
        read_stamp(path)
    with Index(built, tiny_encoder) as ix:
        damaged = ix.stats().ann
    assert (damaged.present, damaged.valid, damaged.seq) == (True, False, None)
    assert "wrong length" in str(damaged.error)
    assert main(["index", "stats", "--index", str(built), "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)["ann"]) == {"file", "present", "valid", "error"}
    path.unlink()
    assert main(["index", "stats", "--index", str(built), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ann"] == {"file": str(path), "present": False}


def test_tombstones_survive_saving_and_compaction_keeps_answers(tmp_path: Path) -> None:
    points, queries = clustered(2_000, 32, 40, seed=3)
    keys = np.arange(1, 2_001, dtype=np.int64)
    ann = AnnIndex(32, "cosine", store_id="s", seq=4)
    ann.add(keys, points)
    ann.remove(keys[:300])  # 15% of the slots: tombstones, the graph is kept
    assert (len(ann), ann.slots) == (1_700, 2_000)
    ann.add(keys[:1], queries[:1])  # a removed chunk id can come back (SQLite reuses row ids)
    assert ann.search(queries[0], 1).tolist() == [1]
    with pytest.raises(IndexStoreError, match="already in the index"):
        ann.add(keys[500:501], points[:1])

    def check(index: AnnIndex, live_keys: np.ndarray, live_points: np.ndarray) -> None:
        truth = live_keys[np.argsort(-(queries @ live_points.T), axis=1)[:, :10]]
        found = [index.search(q, 10) for q in queries]
        recall = np.mean(
            [len(set(f.tolist()) & set(t.tolist())) / 10 for f, t in zip(found, truth, strict=True)]
        )
        assert recall >= 0.95, recall
        assert set(np.concatenate(found).tolist()) <= set(live_keys.tolist())

    live_keys = np.concatenate([keys[:1], keys[300:]])
    live_points = np.concatenate([queries[:1], points[300:]])
    check(ann, live_keys, live_points)
    ann.seq = 9
    path = tmp_path / "x.ann"
    ann.save(path)
    data = path.read_bytes()
    assert path.stat().st_mode & 0o777 == 0o644  # not mkstemp's private 0600
    loaded = AnnIndex.load(path)
    assert loaded.viewed and loaded.stamp == ann.stamp and loaded.slots == 2_001
    for q in queries[:20]:
        np.testing.assert_array_equal(loaded.search(q, 10), ann.search(q, 10))
    check(loaded, live_keys, live_points)
    # A viewed graph is copied before it changes (FAISS would abort), and the file never changes.
    extra = AnnIndex.load(path)
    extra.add(np.array([9_999], np.int64), queries[1:2])
    assert not extra.viewed and extra.search(queries[1], 1).tolist() == [9_999]
    assert path.read_bytes() == data
    # Past a quarter of dead slots the graph is rebuilt from the live vectors it holds.
    loaded.remove(keys[300:700])
    assert loaded.slots == len(loaded) == 1_301 and not loaded.viewed
    still = np.r_[0, 401 : len(live_keys)]
    check(loaded, live_keys[still], live_points[still])
    np.testing.assert_array_equal(np.sort(loaded.keys()), np.sort(live_keys[still]))


def test_loaded_graph_is_searched_in_private_memory_and_stays_changeable(tmp_path: Path) -> None:
    from distilmarco.index.ann.native import ask_huge_pages, huge_pages_available, private_buffer

    points, queries = clustered(1_500, 32, 20, seed=5)
    keys = np.arange(10, 1_510, dtype=np.int64)
    ann = AnnIndex(32, "cosine", store_id="s", seq=1)
    ann.add(keys, points)
    ann.remove(keys[:50])
    path = tmp_path / "x.ann"
    ann.save(path)
    data = path.read_bytes()
    loaded = AnnIndex.load(path)
    # a read-only view of memory of its own; small files stay on 4 KiB pages
    assert loaded.viewed and not loaded.on_huge_pages
    for q in queries:
        np.testing.assert_array_equal(loaded.search(q, 10), ann.search(q, 10))
    loaded.add(np.array([7], np.int64), queries[:1])  # copied out of the view first
    assert not loaded.viewed and not loaded.on_huge_pages
    assert loaded.search(queries[0], 1).tolist() == [7] and len(loaded) == 1_451
    assert path.read_bytes() == data
    # big ones move onto 2 MiB pages once read, where Linux has them, keeping their contents
    _memory, raw = private_buffer(8 << 20)
    raw[:] = np.arange(8 << 20, dtype=np.uint64).astype(np.uint8)
    assert ask_huge_pages(raw) is huge_pages_available()
    np.testing.assert_array_equal(raw[:1000], np.arange(1000).astype(np.uint8))
    assert not ask_huge_pages(raw[: 1 << 20])  # no whole 2 MiB page inside


def test_no_memory_to_read_a_file_into_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from distilmarco.index.ann import file as ann_file

    def no_memory(size: int) -> None:
        raise OSError(12, "Cannot allocate memory")

    points, _ = clustered(400, 16, 10, seed=9)
    ann = AnnIndex(16, "cosine", store_id="s")
    ann.add(np.arange(400), points)
    ann.save(tmp_path / "x.ann")
    monkeypatch.setattr(ann_file, "private_buffer", no_memory)
    with pytest.raises(IndexStoreError, match=r"could not be read: .*Cannot allocate memory"):
        AnnIndex.load(tmp_path / "x.ann")


@pytest.mark.slow  # a fresh interpreter that imports torch: about 7 s
def test_a_big_ann_file_truncated_while_in_use_never_kills_the_process(  # type: ignore[no-untyped-def]
    tiny_model_dir, tmp_path: Path
) -> None:
    """Another process cuts the file the open index has loaded: the search goes on from the
    memory the file was read into, with the same answers. (Before, files over a size threshold
    were searched from a shared mapping: the process died of SIGBUS, exit status 135.)"""
    path = tmp_path / "docs.db"
    script = textwrap.dedent(
        f"""
        import os
        from distilmarco.index import Index
        from distilmarco.index.ann import AnnConfig
        config = AnnConfig(huge_pages_min_bytes=0, read_chunk_bytes=4096)  # big, in every sense
        def opened():
            return Index({str(path)!r}, encoder={str(tiny_model_dir)!r}, ann="always",
                         ann_config=config)
        idx = opened()
        idx.add([str(i) for i in range(300)], [f"text number {{i}}" for i in range(300)])
        idx.optimize()
        idx.close()
        idx = opened()
        queries = ["text number 7", "number 250", "text 42"]
        first = [[h.id for h in idx.search(q, k=5)] for q in queries]
        exact = [[h.id for h in idx.search(q, k=5, exact=True)] for q in queries]
        os.truncate({str(path)!r} + ".ann", 100)  # another process cuts the file
        again = [[h.id for h in idx.search(q, k=5)] for q in queries]
        idx.add(["late"], ["text number 7, late"])  # changes still work, and save a sound file
        late = [h.id for h in idx.search("text number 7, late", k=1)]
        idx.close()
        print(first == again == exact, "late" in late, os.path.getsize({str(path)!r} + ".ann") > 100)
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert done.stdout.split() == ["True", "True", "True"]


def test_parts_are_searched_together_saved_and_changed_one_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from distilmarco.index.ann import index as ann_index

    config = AnnConfig(part_size=700)
    points, queries = clustered(2_000, 32, 40, seed=11)
    keys = np.arange(5, 2_005, dtype=np.int64)
    ann = AnnIndex(32, "cosine", store_id="s", seq=3, config=config)
    ann.add(keys[:1_500], points[:1_500])  # fills 700 + 700 + 100
    ann.add(keys[1_500:], points[1_500:])  # the smallest part takes the rest: 600
    assert (ann.parts, ann.slots, len(ann)) == (3, 2_000, 2_000)
    gone = keys[650:760]  # tombstones in the first two parts
    ann.remove(gone)
    live = ~np.isin(keys, gone)
    truth = keys[live][np.argsort(-(queries @ points[live].T), axis=1)[:, :10]]

    def answers(index: AnnIndex) -> list[np.ndarray]:
        return [index.search(q, 10) for q in queries]

    found = answers(ann)
    recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)])
    assert recall >= 0.95, recall
    assert not set(np.concatenate(found).tolist()) & set(gone.tolist())
    keys_found, approx = ann.search_scored(queries[0], 25)  # merged: the best of every part
    assert len(keys_found) == 25 and (np.diff(approx) <= 0).all()
    np.testing.assert_allclose(approx, queries[0] @ points[keys_found - 5].T, atol=2e-3)
    with monkeypatch.context() as one_cpu:  # parts searched in turn, same answers
        one_cpu.setattr(ann_index, "search_pool", lambda: None)
        assert all((a == b).all() for a, b in zip(answers(ann), found, strict=True))

    path = tmp_path / "parts.ann"
    ann.save(path)
    data = path.read_bytes()
    loaded = AnnIndex.load(path, config)
    assert loaded.viewed and (loaded.parts, loaded.stamp) == (3, ann.stamp)
    assert all((a == b).all() for a, b in zip(answers(loaded), found, strict=True))
    loaded.add(np.array([3], np.int64), queries[:1])  # goes to the 600-slot part, copied out
    assert loaded.part_views == [True, True, False] and loaded.viewed
    assert loaded.search(queries[0], 1).tolist() == [3]
    loaded.remove(keys[:200])  # more than a quarter of part 0: compacted, out of the view
    assert loaded.part_views == [False, True, False]
    assert loaded.slots == 2_001 - 250 and len(loaded) == 2_000 - 110 - 200 + 1
    assert path.read_bytes() == data


def test_file_of_the_first_formats_is_rebuilt(built: Path, tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    path = built.with_name(built.name + ".ann")
    data = bytearray(path.read_bytes())
    data[:8] = b"DMANN01\n"
    path.write_bytes(bytes(data))
    with pytest.raises(IndexStoreError, match="bad magic"):
        AnnIndex.load(path)
    reopen_and_compare(built, tiny_encoder, AnnEvent.REBUILT, "older format")


def test_file_of_the_previous_format_is_rebuilt_from_the_store(  # type: ignore[no-untyped-def]
    built: Path, tiny_encoder
) -> None:
    """Files from before this format (float16 parts, M 16 graphs, one graph per file) are not
    read: the store rebuilds the cache, and the answers stay right."""
    path = built.with_name(built.name + ".ann")
    data = path.read_bytes()
    assert data.endswith(MAGIC) and MAGIC == b"DMANN05\n"
    path.write_bytes(data[: -len(MAGIC)] + b"DMANN04\n")
    with pytest.raises(IndexStoreError, match="older format"):
        AnnIndex.load(path)
    reopen_and_compare(built, tiny_encoder, AnnEvent.REBUILT, "older format")
    assert path.read_bytes().endswith(MAGIC)
    reopen_and_compare(built, tiny_encoder, AnnEvent.LOADED)


def test_ef_search_grows_with_the_index() -> None:
    from distilmarco.index.ann.ef_search import (
        EF_SEARCH_BY_SIZE,
        MERGED_EF_SCALE,
        ef_search_for,
        part_ef_search,
    )

    sizes = [0, 10, 10_000, 60_000, 100_000, 400_000, 1_000_000, 10_000_000]
    efs = [ef_search_for(n) for n in sizes]
    assert efs == sorted(efs) and efs[0] == EF_SEARCH_BY_SIZE[0][1] == 56
    assert efs[-1] == EF_SEARCH_BY_SIZE[-1][1] == 148
    assert [ef_search_for(n) for n, _ in EF_SEARCH_BY_SIZE] == [ef for _, ef in EF_SEARCH_BY_SIZE]
    assert ef_search_for(300_000) == round(64 + (148 - 64) * np.log(3) / np.log(10))  # log-linear
    rng = np.random.default_rng(8)
    x = rng.standard_normal((300, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ann = AnnIndex(16, "cosine", store_id="s")
    ann.add(np.arange(1, 301), x)
    assert ann.part_m == [32] and ann.part_ef_search == [56]
    keys, approx = ann.search_scored(x[3], 500)  # more than ef_search: it widens to the count
    assert len(keys) == 300 and keys[0] == 4
    np.testing.assert_allclose(approx, x[keys - 1] @ x[3], atol=2e-3)
    assert (np.diff(approx) <= 1e-6).all()

    assert part_ef_search([60_000]) == [ef_search_for(60_000)]
    assert part_ef_search([60_000, 5], fixed=40) == [40, 40]
    equal = round(ef_search_for(500_000) * MERGED_EF_SCALE)
    assert part_ef_search([500_000, 500_000]) == [equal, equal] < [ef_search_for(500_000)] * 2
    big, small = part_ef_search([500_000, 10_000])  # the big part holds nearly all the top 10
    assert big >= 0.98 * ef_search_for(500_000) and small == round(56 * MERGED_EF_SCALE)
    fixed = AnnIndex(16, "cosine", store_id="s", config=AnnConfig(ef_search=20))
    fixed.add(np.arange(1, 301), x)
    assert fixed.part_ef_search == [20] and fixed.search(x[3], 1).tolist() == [4]


def test_config_is_checked() -> None:
    for bad in ({"m": 0}, {"part_size": 0}, {"ef_search": 0}, {"compact_dead_fraction": 0.0}):
        with pytest.raises(InputError, match=next(iter(bad))):
            AnnConfig(**bad)  # type: ignore[arg-type]


def test_ann_sources_carry_no_timings_or_cpu_names() -> None:
    """Measurements live in benchmarks/results/ann-notes.md; the code says why in a sentence."""
    import distilmarco.index.ann as package

    pattern = re.compile(r"\d\s?(ms|us|µs)\b|\d\.\d+ s\b|[GM]B/s|q/s|\b(Xeon|EPYC|Zen|AVX)")
    for source in Path(package.__file__).parent.glob("*.py"):
        for number, line in enumerate(source.read_text().splitlines(), 1):
            assert not pattern.search(line), f"{source.name}:{number}: {line.strip()}"


def test_empty_index_saves_and_loads(tmp_path: Path) -> None:
    path = tmp_path / "empty.ann"
    AnnIndex(8, "dot", store_id="e", seq=2).save(path)
    loaded = AnnIndex.load(path)
    assert (len(loaded), loaded.parts, loaded.stamp.seq) == (0, 0, 2)
    assert loaded.search(np.ones(8, np.float32), 5).tolist() == []


def test_big_part_is_compacted_in_the_background_and_catches_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from distilmarco.index.ann.part import GraphPart

    # the copy takes the lock 5 times
    config = AnnConfig(background_compact_min=1_000, snapshot_batch=300)
    started, release = threading.Event(), threading.Event()
    build = GraphPart.rebuilt

    def gated(self: GraphPart, keys: np.ndarray, vectors: np.ndarray, threads: int = 0) -> Any:
        started.set()
        assert release.wait(60)
        return build(self, keys, vectors, threads)

    monkeypatch.setattr(GraphPart, "rebuilt", gated)
    points, queries = clustered(2_100, 32, 40, seed=5)
    keys = np.arange(1, 2_101, dtype=np.int64)
    ann = AnnIndex(32, "cosine", store_id="s", seq=1, config=config)
    ann.add(keys[:2_000], points[:2_000])
    ann.remove(keys[:600])  # 30% dead: due, and big enough for the background
    assert started.wait(60) and ann.compacting == 1
    # meanwhile: searches, removals (one already tombstoned, one in the copy), additions
    late_removed = keys[590:700]
    ann.remove(late_removed)
    ann.add(keys[2_000:], points[2_000:])
    ann.remove(keys[2_050:2_060])  # added and removed while the copy was being built
    assert ann.compacting == 1 and ann.slots == 2_100 and ann.generation == 0
    live = np.ones(2_100, bool)
    live[:700] = False
    live[2_050:2_060] = False

    def check() -> None:
        truth = keys[live][np.argsort(-(queries @ points[live].T), axis=1)[:, :10]]
        found = [ann.search(q, 10) for q in queries]
        hits = [len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth, strict=True)]
        assert np.mean(hits) / 10 >= 0.95
        assert set(np.concatenate(found).tolist()) <= set(keys[live].tolist())

    check()
    release.set()
    assert ann.wait_compacted(timeout=60) and ann.compacting == 0
    assert ann.generation == 1 and len(ann) == int(live.sum()) == 2_100 - 700 - 10
    assert ann.slots == 2_000 - 600 + 90  # the copy, and what was added since and still lives
    assert ann.search(queries[0], 1).tolist() == [keys[live][np.argmax(points[live] @ queries[0])]]
    got, approx = ann.search_scored(points[2_001], 1)  # the stored float32 values carried over
    assert got.tolist() == [2_002] and abs(approx[0] - 1.0) < 1e-5
    got, approx = ann.search_scored(points[1_000], 1)  # copied out by the compaction: unrounded
    assert got.tolist() == [1_001] and abs(approx[0] - 1.0) < 1e-6
    check()
    path = tmp_path / "c.ann"
    ann.save(path)
    assert AnnIndex.load(path).slots == ann.slots


def test_index_close_waits_for_a_compaction_and_saves_it(
    built: Path, tiny_encoder, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    import threading

    from distilmarco.index.ann.part import GraphPart

    release = threading.Event()
    build = GraphPart.rebuilt

    def gated(self: GraphPart, keys: np.ndarray, vectors: np.ndarray, threads: int = 0) -> Any:
        assert release.wait(60)
        return build(self, keys, vectors, threads)

    monkeypatch.setattr(GraphPart, "rebuilt", gated)
    path = built.with_name(built.name + ".ann")
    config = AnnConfig(background_compact_min=100)
    with Index(built, tiny_encoder, ann="always", ann_config=config) as ix:
        ix.search("lift on a wing", 3)  # loads the file
        ix.delete([f"d{i}" for i in range(100)])  # a third of the slots
        ix.search("lift on a wing", 3)  # catches up: the compaction starts, held at the gate
        ann = ix.store.caches.ann()
        assert ann.compacting == 1 and ann.generation == 0
        threading.Timer(0.5, release.set).start()  # lets it finish once close() is waiting
    assert ann.compacting == 0 and ann.generation == 1
    stored = AnnIndex.load(path)
    assert (stored.slots, len(stored)) == (N_DOCS - 100, N_DOCS - 100)


def test_parts_hold_float32_copies_scored_within_summation_order(tmp_path: Path) -> None:
    points, queries = clustered(1_500, 32, 30, seed=11)
    keys = np.arange(1, 1_501, dtype=np.int64)
    fresh = AnnIndex(32, "cosine", store_id="s")
    fresh.add(keys, points)
    # twice the worst case of two D-term float32 sums in different orders (2 * D * 2**-24), and
    # ten times narrower than float16's
    assert 2 * (2 * 32 * 2.0**-24) <= fresh.score_margin <= FLOAT16_MARGIN / 10
    wide = AnnIndex(4_096, "cosine", store_id="w")  # the summation bound grows with dimension
    wide.add(np.array([1], np.int64), np.ones((1, 4_096), np.float32) / 64)
    assert wide.score_margin >= 2 * (2 * 4_096 * 2.0**-24) > fresh.score_margin
    worst = 0.0
    for q in queries[:50]:
        got, approx = fresh.search_scored(q, 10)
        worst = max(worst, float(np.abs(approx - points[got - 1] @ q).max()))  # keys are row + 1
    assert worst < 1e-6  # float32: summation order only


def test_graphs_take_m_from_the_config_and_keep_it(tmp_path: Path) -> None:
    points, _ = clustered(1_500, 32, 30, seed=13)
    keys = np.arange(1, 1_501, dtype=np.int64)
    config = AnnConfig(m=16, ef_construction=64)
    ann = AnnIndex(32, "cosine", store_id="s", config=config)
    ann.add(keys, points)
    assert ann.part_m == [16]
    ann.save(tmp_path / "m16.ann")
    loaded = AnnIndex.load(tmp_path / "m16.ann")  # the file's graph keeps its own M
    assert loaded.part_m == [16] and loaded.search(points[7], 1).tolist() == [8]
    loaded.remove(keys[:500])  # a third dead: compacted at once, into a graph of the config's M
    assert loaded.part_m == [32] and loaded.search(points[700], 1).tolist() == [701]


@pytest.mark.parametrize("similarity", ["cosine", "euclidean"])
def test_big_first_add_makes_rotated_panorama_parts_with_float32_exact_scores(
    tmp_path: Path, similarity: str
) -> None:
    config = AnnConfig(rotation_min_bytes=1_000 * 64 * 4)
    points, queries = clustered(3_000, 64, 40, seed=12)
    if similarity == "euclidean":  # lengths that vary, as euclidean data may have
        points = points * np.linspace(0.5, 2.0, len(points), dtype=np.float32)[:, None]
    keys = np.arange(1, 3_001, dtype=np.int64)

    def checked(index: AnnIndex, live: np.ndarray) -> tuple[float, float]:
        """(recall@10 against exact float32 search, worst similarity error)."""
        worst, hits = 0.0, []
        for q in queries[:100]:
            got, approx = index.search_scored(q, 10)
            if similarity == "cosine":
                exact, all_scores = points[got - 1] @ q, points @ q
            else:
                exact = -np.linalg.norm(points[got - 1] - q, axis=1)
                all_scores = -np.linalg.norm(points - q, axis=1)
            worst = max(worst, float(np.abs(approx - exact).max()))
            truth = keys[live][np.argsort(-all_scores[live])[:10]]
            hits.append(len(set(got.tolist()) & set(truth.tolist())) / 10)
        return float(np.mean(hits)), worst

    ann = AnnIndex(64, similarity, store_id="p", config=config)
    ann.add(keys, points)
    assert ann.rotation is not None and all(p.panorama for p in ann._parts)
    # the rotation is orthonormal: the stored copies keep every distance between the points
    basis, mean = ann.rotation.basis.astype(np.float64), ann.rotation.mean.astype(np.float64)
    np.testing.assert_allclose(basis @ basis.T, np.eye(64), atol=1e-5)
    stored = ann._parts[0].vectors_of(np.arange(50)).astype(np.float64)
    np.testing.assert_allclose(stored, (points[:50] - mean) @ basis.T, atol=1e-5)
    gaps = lambda x: np.linalg.norm(x[:, None] - x[None], axis=2)  # noqa: E731
    np.testing.assert_allclose(gaps(stored), gaps(points[:50].astype(np.float64)), atol=1e-5)
    # a query, or a few rows, go one by one through other code than a batch: the same rotation
    expected = (queries[:50] - mean) @ basis.T
    np.testing.assert_allclose(ann.rotation.apply(queries[:5]), expected[:5], atol=1e-5)
    np.testing.assert_allclose(ann.rotation.apply(queries[:50]), expected, atol=1e-5)
    everything = np.ones(3_000, bool)
    recall, error = checked(ann, everything)
    assert recall >= 0.95, recall
    # rotated float32 copies: far inside the margin rescoring relies on, far below float16's
    assert error * 2 <= ann.score_margin <= FLOAT16_MARGIN / 5, (error, ann.score_margin)

    ann.seq = 3
    ann.save(tmp_path / "p.ann")
    loaded = AnnIndex.load(tmp_path / "p.ann", config)
    assert loaded.rotation is not None
    np.testing.assert_array_equal(loaded.rotation.basis, ann.rotation.basis)
    for q in queries[:20]:
        np.testing.assert_array_equal(loaded.search(q, 10), ann.search(q, 10))

    live = everything.copy()
    live[:1_000] = False
    loaded.remove(keys[:1_000])  # a third dead: compacted at once, still Panorama, same rotation
    assert loaded.slots == 2_000 and all(p.panorama for p in loaded._parts)
    recall, error = checked(loaded, live)
    assert recall >= 0.95 and error * 2 <= loaded.score_margin, (recall, error)
    loaded.add(keys[:10], points[:10])  # later vectors are rotated the same way
    got, _ = loaded.search_scored(queries[0], 3_000)
    assert set(keys[:10].tolist()) <= set(got.tolist())

    # the rotation is covered by the checksum like the graph it belongs to
    raw = bytearray((tmp_path / "p.ann").read_bytes())
    header_at = len(raw) - 16 - int.from_bytes(raw[-16:-8], "little")
    raw[header_at - 8] ^= 0xFF  # a byte of the last but one basis value
    (tmp_path / "p.ann").write_bytes(bytes(raw))
    with pytest.raises(IndexStoreError, match="corrupt"):
        AnnIndex.load(tmp_path / "p.ann")


def test_small_first_adds_and_dot_products_keep_plain_parts() -> None:
    config = AnnConfig(rotation_min_bytes=1_000 * 16 * 4)
    points, _ = clustered(2_000, 16, 10, seed=13)
    small = AnnIndex(16, "cosine", store_id="s", config=config)
    small.add(np.arange(1, 11, dtype=np.int64), points[:10])
    small.add(np.arange(11, 2_001, dtype=np.int64), points[10:])  # too late: a part exists
    assert small.rotation is None and not any(p.panorama for p in small._parts)
    dot = AnnIndex(16, "dot", store_id="d", config=config)  # L2 order is not inner-product order
    dot.add(np.arange(1, 2_001, dtype=np.int64), points * 3)
    assert dot.rotation is None and not any(p.panorama for p in dot._parts)
    big = AnnIndex(
        16, "cosine", store_id="b", config=config
    )  # the same vectors in one first add: rotated
    big.add(np.arange(1, 2_001, dtype=np.int64), points)
    assert big.rotation is not None and all(p.panorama for p in big._parts)
