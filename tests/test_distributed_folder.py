"""The embeddings folder without a Ray cluster: ``embed verify`` naming missing and duplicated ids,
the resume clean-up of a checkpoint, bad input refused before any job starts, and ``--ray``
without Ray installed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from distilmarco.cli import main  # noqa: E402
from distilmarco.distributed.manifest import (  # noqa: E402
    InputInfo,
    Manifest,
    ShardFile,
    file_fingerprint,
    verify,
)
from distilmarco.distributed.rows import row_schema  # noqa: E402
from distilmarco.distributed.shards import collect  # noqa: E402
from distilmarco.errors import InputError, MissingExtraError  # noqa: E402

DIM = 4


def shard(rows: list[tuple[str, int, int]]) -> pa.Table:
    """Passage rows (doc_id, passage, passages) with made-up text and vectors."""
    n = len(rows)
    flat = pa.array(np.arange(n * DIM, dtype=np.float32))
    return pa.Table.from_arrays(
        [
            pa.array([f"{d}#{p}" for d, p, _ in rows]),
            pa.array([d for d, _, _ in rows]),
            pa.array([p for _, p, _ in rows], pa.int32()),
            pa.array([t for _, _, t in rows], pa.int32()),
            pa.array([0] * n, pa.int32()),
            pa.array([3] * n, pa.int32()),
            pa.array(["abc"] * n),
            pa.array([None] * n, pa.string()),
            pa.array(["{}"] * n),
            pa.FixedSizeListArray.from_arrays(flat, DIM),
            pa.array([5] * n, pa.int32()),
            pa.array([False] * n),
        ],
        schema=row_schema(DIM),
    )


def folder_with(tmp_path: Path, shards: list[list[tuple[str, int, int]]], src: Path) -> Path:
    out = tmp_path / "out"
    (out / "shards").mkdir(parents=True)
    files = []
    for i, rows in enumerate(shards):
        pq.write_table(shard(rows), out / "shards" / f"part-{i}.parquet")
        files.append(ShardFile(f"shards/part-{i}.parquet", len(rows)))
    inp = InputInfo(str(src), file_fingerprint(src), 3, "id", "text")
    meta = {"model_id": "m", "dimension": str(DIM)}
    rows_total = sum(f.rows for f in files)
    Manifest("m", "", "torch", "fp32", DIM, "cosine", meta, None, inp, tuple(files),
             rows_total, 3).write(out)  # fmt: skip
    return out


def jsonl(path: Path, ids: list[str]) -> Path:
    path.write_text("".join(json.dumps({"id": i, "text": f"text {i}"}) + "\n" for i in ids))
    return path


def test_verify_names_missing_duplicated_and_unexpected_ids(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = jsonl(tmp_path / "in.jsonl", ["a", "b", "c"])
    good = folder_with(
        tmp_path / "1", [[("a", 0, 1), ("b", 0, 2)], [("b", 1, 2), ("c", 0, 1)]], src
    )
    assert verify(good, src).ok
    assert main(["embed", "verify", str(good), "--against", str(src)]) == 0

    # c missing, b's second passage missing, a twice, z not in the input
    bad = folder_with(tmp_path / "2", [[("a", 0, 1), ("b", 0, 2)], [("a", 0, 1), ("z", 0, 1)]], src)
    verdict = verify(bad, src)
    assert verdict.missing == ("b", "c")
    assert verdict.duplicated == ("a#0",)
    assert verdict.unexpected == ("z",)
    capsys.readouterr()
    assert main(["embed", "verify", str(bad), "--against", str(src)]) == 1
    err = capsys.readouterr().err
    assert "2 missing: b, c" in err and "1 duplicated: a#0" in err and "not in the input: z" in err
    assert main(["embed", "verify", str(bad), "--against", str(src), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["missing"] == ["b", "c"]


def test_verify_against_another_input_says_so(tmp_path: Path) -> None:
    src = jsonl(tmp_path / "in.jsonl", ["a", "b", "c"])
    out = folder_with(tmp_path, [[("a", 0, 1), ("b", 0, 1), ("c", 0, 1)]], src)
    other = jsonl(tmp_path / "other.jsonl", ["a", "b", "c", "d"])
    verdict = verify(out, other)
    assert verdict.missing == ("d",)
    assert any("fingerprint differs" in p for p in verdict.problems)
    with pytest.raises(InputError, match=r"no manifest\.json"):
        verify(tmp_path, src)


def test_resume_keeps_complete_documents_only(tmp_path: Path) -> None:
    folder = tmp_path / "shards"
    folder.mkdir()
    # One finished shard with a document whose second passage went to an unfinished block.
    pq.write_table(shard([("a", 0, 1), ("b", 0, 2), ("c", 0, 1)]), folder / "one.parquet")
    pq.write_table(shard([("c", 0, 1), ("d", 0, 1)]), folder / "two.parquet")  # c again
    data = (folder / "one.parquet").read_bytes()
    (folder / "torn.parquet").write_bytes(data[: len(data) // 2])  # a write cut short
    found = collect(folder)
    assert found.documents == {"a", "c", "d"}
    assert not (folder / "torn.parquet").exists()
    kept = pa.concat_tables(pq.read_table(p) for p in found.files)
    assert sorted(kept.column("id").to_pylist()) == ["a#0", "c#0", "d#0"]
    assert found.rows == 3


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"key": "a", "text": "x"}\n', "no column 'id'"),
        ('{"id": "a", "text": "x"}\n{"id": "b", "text": "y"}\n{"id": "a", "text": "z"}\n',
         "1 id\\(s\\) occur more than once in column 'id': a"),
        ("", "holds no rows"),
        ('{"id": "a", "body": "x"}\n', "no column 'text'"),
        ('{"id": "a", "text": "x"}\n{"id": "b", "text": null}\n', "have no text in column 'text': b"),
    ],
)  # fmt: skip
def test_bad_input_is_refused_before_any_job(
    tmp_path: Path,
    tiny_model_dir: Path,
    capsys: pytest.CaptureFixture[str],
    content: str,
    message: str,
) -> None:
    from distilmarco.distributed import JobSettings, run_job

    pytest.importorskip("ray.data")
    src = tmp_path / "in.jsonl"
    src.write_text(content)
    settings = JobSettings(input=src, output=tmp_path / "out", model=str(tiny_model_dir))
    with pytest.raises(InputError, match=message):
        run_job(settings, address="192.0.2.1:1")  # never contacted: the input is checked first
    args = ["embed", str(src), "-o", str(tmp_path / "o"), "--ray", "192.0.2.1:1"]
    assert main([*args, "-m", str(tiny_model_dir)]) == 1
    assert "error:" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_ray_options_need_ray_and_ray_needs_its_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    src = jsonl(tmp_path / "in.jsonl", ["a"])
    assert main(["embed", str(src), "-o", str(tmp_path / "v.npy"), "--checkpoint", "c"]) == 2
    assert "--checkpoint only apply with --ray" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    from distilmarco.distributed.ray_import import require_ray

    with pytest.raises(MissingExtraError, match=r"distilmarco\[distributed\]"):
        require_ray("embedding on Ray")
    assert main(["embed", str(src), "-o", str(tmp_path / "out"), "--ray", "auto"]) == 1
    assert "pip install 'distilmarco[distributed]'" in capsys.readouterr().err


def test_checkpoint_and_output_must_differ_and_output_must_be_new(tmp_path: Path) -> None:
    from distilmarco.distributed import JobSettings, run_job

    pytest.importorskip("ray.data")
    src = jsonl(tmp_path / "in.jsonl", ["a", "b", "c"])
    same = JobSettings(input=src, output=tmp_path / "o", model="m", checkpoint=tmp_path / "o")
    with pytest.raises(InputError, match="must be another folder than -o"):
        run_job(same, address="192.0.2.1:1")
    done = folder_with(tmp_path, [[("a", 0, 1), ("b", 0, 1), ("c", 0, 1)]], src)
    again = JobSettings(input=src, output=done, model="m")
    with pytest.raises(InputError, match="already holds embeddings"):
        run_job(again, address="192.0.2.1:1")
    assert verify(done, src).ok  # nothing of the finished folder was touched


def test_a_checkpoint_of_another_job_is_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    from distilmarco.distributed import JobSettings, run_job

    pytest.importorskip("ray.data")
    ckpt = tmp_path / "ckpt"
    (ckpt / "shards").mkdir(parents=True)
    kept = ckpt / "shards" / "part.parquet"
    pq.write_table(shard([("a", 0, 1)]), kept)
    record = {"input": "sha256:0", "model_meta": {}, "chunking": None, "id_column": "id",
              "column": "text"}  # fmt: skip
    (ckpt / "job.json").write_text(json.dumps(record))
    src = jsonl(tmp_path / "in.jsonl", ["a", "b"])
    settings = JobSettings(input=src, output=tmp_path / "out", model=str(tiny_model_dir),
                           checkpoint=ckpt)  # fmt: skip
    with pytest.raises(InputError, match="made for another job \\(its input, model_meta differ\\)"):
        run_job(settings, address="192.0.2.1:1")
    assert kept.is_file()  # nothing of the other job's checkpoint is removed
