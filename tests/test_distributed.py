"""Bulk embedding on a real multi-node Ray cluster (``ray.cluster_utils.Cluster``: a head and two
worker nodes on this machine, one per session): parity with ``Encoder.encode``, faults (a killed
actor, a removed node, a killed driver, a batch that always fails) and resume.

Every test here shares the cluster, so they run on one xdist worker (``xdist_group``); the
fixture ends the nodes it started and nothing else.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from milvus_fixtures import milvus_location, milvus_server  # noqa: F401

pytest.importorskip("ray.data")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

import distilmarco  # noqa: E402
from distilmarco import Encoder  # noqa: E402
from distilmarco.cli import main  # noqa: E402
from distilmarco.distributed import (  # noqa: E402
    EmbedJobError,
    FaultPlan,
    JobSettings,
    embed_dataset,
    run_job,
    verify,
)
from distilmarco.index import Index  # noqa: E402
from distilmarco.index.identity import Engine  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]

STORE = 80 * 2**20  # object store per node: small, as on a CI runner
# Embedding actors need the custom resource only worker nodes have, one actor per worker; read and
# write tasks reserve no CPU (the head has none), so they never wait for a free one.
WORKER = {"num_cpus": 1, "resources": {"embedder": 1}, "object_store_memory": STORE}
ON_WORKERS = {"embedder": 1.0}
TORCH = Engine(backend="torch")


@pytest.fixture(scope="session")
def cluster() -> Iterator[Any]:
    import ray
    from ray.cluster_utils import Cluster

    # Nodes inherit this process's environment: the package under test and the test export cache.
    src = str(Path(distilmarco.__file__).resolve().parents[1])
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (src, saved) if p)
    nodes = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": STORE}
    )
    try:
        for _ in range(2):
            nodes.add_node(**WORKER)
        nodes.wait_for_nodes()
        ray.init(address=nodes.address, log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        yield nodes
    finally:
        ray.shutdown()
        nodes.shutdown()  # ends exactly the node processes this fixture started
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


def corpus(n: int) -> list[dict[str, Any]]:
    """Documents of varied length (some cut into several passages) with a metadata column."""
    words = ["planes", "fly", "because", "wings", "push", "air", "down", "and", "the", "air"]
    return [
        {"id": f"d{i}", "text": " ".join(words[: 3 + i % 12] * (1 + i % 4)), "year": 1990 + i % 30}
        for i in range(n)
    ]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def shard_table(folder: Path) -> Any:
    manifest = json.loads((folder / "manifest.json").read_text())
    return pa.concat_tables(pq.read_table(folder / f["path"]) for f in manifest["files"])


def first_shard(folder: Path, timeout: float = 120.0) -> Path:
    """Wait until ``folder`` holds a shard whose Parquet footer is readable (a committed block)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in folder.glob("*.parquet"):
            try:
                pq.ParquetFile(path)
                return path
            except (pa.ArrowInvalid, OSError):
                pass
        time.sleep(0.05)
    raise AssertionError(f"no committed shard in {folder} after {timeout}s")


def test_cli_job_matches_encoder_and_index(
    cluster: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    rows = corpus(60)
    src = write_jsonl(tmp_path / "docs.jsonl", rows)
    out = tmp_path / "vectors"
    args = ["embed", str(src), "-o", str(out), "--ray", cluster.address, "-m", str(tiny_model_dir)]
    chunk = ["--chunk", "--chunk-tokens", "16", "--chunk-overlap", "4", "--actors", "2"]
    assert main([*args, "--backend", "torch", *chunk]) == 0
    table = shard_table(out)
    manifest = json.loads((out / "manifest.json").read_text())

    # The index cuts the same documents into the same passages and records the same identity.
    encoder = Encoder(tiny_model_dir, backend="torch")
    with Index(tmp_path / "ref.db", encoder, chunk_tokens=16, chunk_overlap=4) as index:
        ids, texts = [r["id"] for r in rows], [r["text"] for r in rows]
        prepared = index.prepare(ids, texts)
        index.add(ids, texts)
        recorded = index.store.meta()
    assert manifest["model_meta"] == {k: recorded[k] for k in manifest["model_meta"]}
    assert set(manifest["model_meta"]) >= {"fingerprint", "chunk_window", "chunk_overlap"}
    by_id = {r: i for i, r in enumerate(table.column("id").to_pylist())}
    expected_ids = [f"{d.id}#{n}" for d in prepared for n in range(len(d.chunks))]
    assert sorted(by_id) == sorted(expected_ids) and len(by_id) == table.num_rows
    assert table.num_rows > len(rows)  # some documents were cut into several passages
    starts, ends = table.column("start").to_pylist(), table.column("end").to_pylist()
    for doc in prepared:
        for n, chunk_row in enumerate(doc.chunks):
            i = by_id[f"{doc.id}#{n}"]
            assert (starts[i], ends[i]) == (chunk_row.start, chunk_row.end)

    # Vectors: Encoder.encode of each passage text, fp32, to 1e-6; every row carries its fields.
    passages = table.column("text").to_pylist()
    vectors = np.array(table.column("vector").to_pylist(), dtype=np.float32)
    np.testing.assert_allclose(vectors, encoder.encode(passages), atol=1e-6, rtol=0)
    assert table.schema.field("vector").type == pa.list_(pa.float32(), encoder.dimension)
    text_of = {r["id"]: r["text"] for r in rows}
    for row in table.to_pylist()[:40]:
        whole = text_of[row["doc_id"]]
        assert row["text"] == whole[row["start"] : row["end"]]
        assert row["document"] == (whole if row["passage"] == 0 else None)
        assert json.loads(row["metadata"]) == {"year": 1990 + int(row["doc_id"][1:]) % 30}
        assert row["tokens"] == len(encoder.tokenizer.encode([row["text"]]).ids[0])
    assert manifest["rows"] == table.num_rows and manifest["documents"] == 60
    assert manifest["input"]["rows"] == 60 and manifest["normalized"] is False
    assert main(["embed", "verify", str(out), "--against", str(src)]) == 0


def test_embed_dataset_composes_into_a_pipeline(cluster: Any, tiny_model_dir: Path) -> None:
    import ray

    texts = [f"passage number {i} about wings" for i in range(40)]
    ds = ray.data.from_items([{"key": i, "body": t} for i, t in enumerate(texts)])
    rows = embed_dataset(
        ds, tiny_model_dir, id_column="key", column="body", engine=TORCH
    ).take_all()
    got = {r["doc_id"]: r for r in rows}
    assert sorted(got, key=int) == [str(i) for i in range(40)]
    expected = Encoder(tiny_model_dir, backend="torch").encode(texts)
    vectors = np.array([got[str(i)]["vector"] for i in range(40)], dtype=np.float32)
    np.testing.assert_allclose(vectors, expected, atol=1e-6, rtol=0)
    assert {(r["start"], r["end"]) for r in rows} == {(0, len(t)) for t in texts}


@pytest.mark.parametrize("chunk", [True, False], ids=["chunked", "whole"])
def test_ray_folder_pushed_to_milvus_searches_as_the_sqlite_index(
    cluster: Any, request: pytest.FixtureRequest, tiny_model_dir: Path, tmp_path: Path, chunk: bool
) -> None:
    """The two halves together: a folder written by ``embed --ray`` is pushed into Milvus without
    embedding again, then opened with the same encoder and searched like the SQLite index."""
    pytest.importorskip("pymilvus")
    location = str(request.getfixturevalue("milvus_location"))
    rows = corpus(30)
    src = write_jsonl(tmp_path / "docs.jsonl", rows)
    out = tmp_path / "vectors"
    windows = ["--chunk", "--chunk-tokens", "16", "--chunk-overlap", "4"] if chunk else []
    args = ["embed", str(src), "-o", str(out), "--ray", cluster.address, "-m", str(tiny_model_dir)]
    assert main([*args, "--backend", "torch", *windows]) == 0
    assert main(["index", "push", str(out), "--to", location]) == 0

    encoder = Encoder(tiny_model_dir, backend="torch")
    ids, texts = [r["id"] for r in rows], [r["text"] for r in rows]
    with Index(
        tmp_path / "ref.db",
        encoder,
        chunk_tokens=16 if chunk else None,
        chunk_overlap=4 if chunk else None,
    ) as local:
        local.add(ids, texts, metadata=[{"year": r["year"]} for r in rows])
        with Index(location, encoder) as remote:
            assert remote.stats().documents == 30
            assert remote.get("d7") is not None and remote.get("d7").text == rows[7]["text"]
            for query in ("wings push air", "planes fly"):
                want = local.search(query, k=5, exact=True)
                got = remote.search(query, k=5)
                assert [h.id for h in got] == [h.id for h in want]
                np.testing.assert_allclose(
                    [h.score for h in got], [h.score for h in want], atol=1e-5
                )
                assert [(h.start, h.end) for h in got] == [(h.start, h.end) for h in want]
            filtered = remote.search("planes fly", k=30, where={"year": 1995})
            assert {h.id for h in filtered} == {r["id"] for r in rows if r["year"] == 1995}


def job(src: Path, out: Path, model: Path, **options: Any) -> JobSettings:
    return JobSettings(input=src, output=out, model=str(model), engine=TORCH,
                       batch_documents=8, resources=ON_WORKERS, **options)  # fmt: skip


def test_killed_actor_job_completes_each_id_once(
    cluster: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    src = write_jsonl(tmp_path / "docs.jsonl", corpus(80))
    marker = tmp_path / "killed"
    faults = FaultPlan(kill_once_on="d37", marker=str(marker))
    report = run_job(job(src, tmp_path / "out", tiny_model_dir, faults=faults), address=None)
    assert marker.is_file()  # an actor did die mid-job
    verdict = verify(tmp_path / "out", src)
    assert verdict.ok and verdict.documents == 80 and report.rows == verdict.rows


def test_removed_node_job_completes_each_id_once(
    cluster: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    src = write_jsonl(tmp_path / "docs.jsonl", corpus(96))
    ckpt = tmp_path / "ckpt"
    settings = job(src, tmp_path / "out", tiny_model_dir, actors=(2, 2), checkpoint=ckpt,
                   faults=FaultPlan(delay_s=0.3))  # fmt: skip
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.update(report=run_job(settings, None)))
    thread.start()
    first_shard(ckpt / "shards")
    import ray

    driver_node = ray.get_runtime_context().get_node_id()
    victim = next(n for n in cluster.worker_nodes if n.node_id != driver_node)
    cluster.remove_node(victim)  # one of the two actors (and the objects it held) go with it
    try:
        thread.join(timeout=180)
        assert not thread.is_alive(), "the job did not finish after a node was removed"
    finally:
        cluster.add_node(**WORKER)
        cluster.wait_for_nodes()
    assert "report" in result
    verdict = verify(tmp_path / "out", src)
    assert verdict.ok and verdict.documents == 96


DRIVER = """
import ray, sys
from pathlib import Path
from distilmarco.distributed import FaultPlan, JobSettings, run_job
from distilmarco.index.identity import Engine
src, out, ckpt, model, address = sys.argv[1:]
ray.init(address=address, log_to_driver=False)
run_job(JobSettings(input=Path(src), output=Path(out), model=model, engine=Engine(backend="torch"),
        batch_documents=8, resources={"embedder": 1.0}, checkpoint=Path(ckpt),
        faults=FaultPlan(delay_s=0.3)), address=None)
"""


def test_killed_driver_resumes_without_redoing_committed_blocks(
    cluster: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    src = write_jsonl(tmp_path / "docs.jsonl", corpus(96))
    out, ckpt = tmp_path / "out", tmp_path / "ckpt"
    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent(DRIVER))
    args = [str(src), str(out), str(ckpt), str(tiny_model_dir), cluster.address]
    driver = subprocess.Popen([sys.executable, str(script), *args], stderr=subprocess.DEVNULL)
    try:
        first_shard(ckpt / "shards")
    finally:
        os.kill(driver.pid, signal.SIGKILL)  # the driver this test started, by its pid
        driver.wait(timeout=30)
    assert not (out / "manifest.json").exists()
    report = run_job(job(src, out, tiny_model_dir, checkpoint=ckpt), address=None)
    total = verify(out, src)
    assert total.ok and total.documents == 96
    assert report.resumed_documents > 0
    assert 0 < report.embedded_rows < total.rows  # committed blocks were not embedded again
    assert not ckpt.exists()  # a finished job removes its checkpoint


def test_batch_that_always_fails_names_its_ids(
    cluster: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    src = write_jsonl(tmp_path / "docs.jsonl", corpus(32))
    settings = job(src, tmp_path / "out", tiny_model_dir, faults=FaultPlan(crash_on="d13"))
    with pytest.raises(EmbedJobError, match=r"failed 3 times.*d13") as caught:
        run_job(settings, address=None)
    named = str(caught.value).split("its ids: ", 1)[1].split(", ")
    assert "d13" in named and len(named) == len(set(named)) > 1  # the whole failing batch
    assert set(named) <= {f"d{i}" for i in range(32)}
    assert not (tmp_path / "out" / "manifest.json").exists()
