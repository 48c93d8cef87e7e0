"""Index faults surface as our own clear errors: long ``where`` lists, keys that need quoting,
a full disk, a damaged file, a folder or a truncated file where the ANN cache should be."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from distilmarco.errors import IndexFullError, IndexStoreError, InputError
from distilmarco.index import Index
from distilmarco.index.ann import AnnEvent
from distilmarco.index.filters import MAX_WHERE_VALUES

TEXTS = [
    "Planes fly because their wings push air down.",
    "Boil an egg for nine minutes for a firm yolk.",
    "Cats sleep for most of the day and hunt at dusk.",
]


@pytest.fixture()
def index(tiny_encoder, tmp_path: Path):  # type: ignore[no-untyped-def]
    idx = Index(tmp_path / "docs.db", encoder=tiny_encoder)
    metas = [
        {"n": 1, 'say "hi"': "yes", "back\\slash": True},
        {"n": 2, 'say "hi"': "no", "back\\slash": None},
        {"n": 3},
    ]
    idx.add(["planes", "eggs", "cats"], TEXTS, metas)
    yield idx
    idx.close()


def test_a_where_list_of_thousands_of_values_works(index: Index) -> None:
    many = [*range(1000, 6000), 2]  # SQLite's expression depth ends near 1,000 ORs
    hits = index.search("eggs", k=3, where={"n": many})
    assert [h.id for h in hits] == ["eggs"]
    assert [h.id for h in index.search("eggs", k=3, where={"n": many}, mode="bm25")] == ["eggs"]
    with pytest.raises(InputError, match=f"more than {MAX_WHERE_VALUES} values"):
        index.search("eggs", k=3, where={"n": list(range(MAX_WHERE_VALUES + 1))})


@pytest.mark.parametrize(
    "where, expected",
    [
        ({'say "hi"': "yes"}, {"planes"}),
        ({'say "hi"': ["no", "yes"]}, {"planes", "eggs"}),
        ({"back\\slash": True}, {"planes"}),
        ({"back\\slash": None}, {"eggs"}),
        ({"back\\slash": [None, True], "n": [1, 2, 3]}, {"planes", "eggs"}),
    ],
)
def test_keys_with_quotes_and_backslashes_can_be_filtered(
    index: Index, where: dict, expected: set[str]
) -> None:
    for mode in ("dense", "bm25", "hybrid"):
        query = "planes eggs cats" if mode != "dense" else "anything"
        got = {h.id for h in index.search(query, k=3, where=where, mode=mode)}  # type: ignore[arg-type]
        assert got == expected, mode


def test_a_full_disk_keeps_the_real_error_and_the_data(index: Index) -> None:
    store = index.store.db
    store.set_max_pages(store.page_count())  # the file may not grow: as a full disk
    with pytest.raises(IndexFullError, match=r"full.*nothing was written"):
        index.add(["big"], ["a long document about planes and wings " * 2000])
    store.set_max_pages(None)
    assert index.count() == 3 and "big" not in index
    index.add(["big"], ["now it fits"])
    assert index.get("big").text == "now it fits"


def test_a_damaged_file_is_an_index_store_error(tiny_encoder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "docs.db"
    with Index(path, encoder=tiny_encoder) as idx:
        idx.add([f"d{i}" for i in range(200)], [f"document number {i} " * 20 for i in range(200)])
    size = path.stat().st_size
    with open(path, "r+b") as f:  # keep the header page, scribble over the rest
        f.seek(4096)
        f.write(os.urandom(size - 4096))
    with (
        pytest.raises(IndexStoreError, match=r"damaged|not a usable"),
        Index(path, encoder=tiny_encoder) as idx,
    ):
        idx.search("document", k=3)
        idx.get("d5")


def test_a_folder_at_the_ann_path_is_rebuilt_around(tiny_encoder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "docs.db"
    (tmp_path / "docs.db.ann").mkdir()
    with Index(path, encoder=tiny_encoder, ann="always") as idx:
        idx.add(["a", "b"], TEXTS[:2])
        for _ in range(3):
            assert {h.id for h in idx.search("planes", k=2)} == {"a", "b"}
        assert idx.stats().ann.valid is False
        assert idx.store.caches.last_ann_event is AnnEvent.REBUILT


def test_a_truncated_ann_file_never_kills_the_process(tiny_model_dir, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "docs.db"
    script = textwrap.dedent(
        f"""
        import os
        from distilmarco.index import Index
        idx = Index({str(path)!r}, encoder={str(tiny_model_dir)!r}, ann="always")
        idx.add([str(i) for i in range(300)], [f"text number {{i}}" for i in range(300)])
        idx.optimize()
        idx.close()
        idx = Index({str(path)!r}, encoder={str(tiny_model_dir)!r}, ann="always")
        first = [h.id for h in idx.search("text number 7", k=3)]
        os.truncate({str(path)!r} + ".ann", 100)  # another process cuts the file
        again = [h.id for h in idx.search("text number 7", k=3)]
        print(first == again, len(again))
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert done.stdout.split() == ["True", "3"]
