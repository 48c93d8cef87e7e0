"""The app commands end to end on the tiny random model (plumbing, formats, errors), over files
and over an index; the HTML map in headless Chromium."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from distilmarco.cli import main

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TEXTS = [
    "The cat sat on the mat.",
    "A cat was sitting on a mat.",
    "Stock markets fell sharply today.",
    "Shares dropped on the exchange.",
    "How do I bake sourdough bread?",
    "Baking bread at home with a starter.",
    "The cat sat on the mat.",  # exact duplicate of row 0
    "Football fans celebrated the win.",
]


@pytest.fixture()
def lines(tmp_path: Path) -> Path:
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_dedup_finds_the_exact_duplicate(
    tiny_model_dir: Path, lines: Path, tmp_path: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    keep = tmp_path / "unique.txt"
    code, out, err = run(
        capsys,
        "dedup",
        str(lines),
        "-m",
        str(tiny_model_dir),
        "--threshold",
        "0.9999",
        "--keep",
        str(keep),
    )
    assert code == 0, err
    # Only rows 0 and 6 are identical; the tiny model's other pairs score at most 0.81.
    assert jsonl(out) == [{"group": 0, "size": 2, "rows": [0, 6], "texts": [TEXTS[0], TEXTS[6]]}]
    assert keep.read_text(encoding="utf-8").splitlines() == TEXTS[:6] + TEXTS[7:]
    assert "8 texts" in err
    code, out, _ = run(
        capsys, "dedup", str(lines), "-m", str(tiny_model_dir), "--threshold", "0.9999", "--pairs"
    )
    pairs = jsonl(out)
    assert (
        pairs[0]["a"] == 0
        and pairs[0]["b"] == 6
        and pairs[0]["score"] == pytest.approx(1.0, abs=1e-5)
    )


def test_similar_between_files_and_pairwise(
    tiny_model_dir: Path, lines: Path, tmp_path: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    code, out, err = run(
        capsys,
        "similar",
        "--from",
        str(lines),
        "--to",
        str(lines),
        "-m",
        str(tiny_model_dir),
        "-k",
        "2",
    )
    assert code == 0, err
    rows = jsonl(out)
    assert len(rows) == 16
    # Each text's best match is itself, or its identical twin (rows 0 and 6 tie; lower row first).
    best = [r for r in rows if r["row"] in (r["query_row"], {0: 6, 6: 0}.get(r["query_row"]))]
    assert [r["query_row"] for r in rows[::2]] == list(range(8))
    assert all(r["score"] == pytest.approx(1.0, abs=1e-5) for r in rows[::2])
    assert [r["row"] for r in rows[::2]] == [0, 1, 2, 3, 4, 5, 0, 7] and len(best) == 10
    out_csv = tmp_path / "pairs.csv"
    code, _, err = run(
        capsys, "similar", "--from", str(lines), "--to", str(lines), "--pairwise", "-m", str(tiny_model_dir),
        "-o", str(out_csv),
    )  # fmt: skip
    assert code == 0, err
    table = list(csv.DictReader(out_csv.open(encoding="utf-8")))
    assert len(table) == 8 and all(float(r["score"]) == pytest.approx(1.0, abs=1e-5) for r in table)


def test_cluster_writes_every_text_and_a_summary(
    tiny_model_dir: Path, lines: Path, tmp_path: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    summary = tmp_path / "summary.json"
    code, out, err = run(
        capsys,
        "cluster",
        str(lines),
        "-m",
        str(tiny_model_dir),
        "--clusters",
        "3",
        "--summary",
        str(summary),
    )
    assert code == 0, err
    rows = jsonl(out)
    assert [r["row"] for r in rows] == list(range(8)) and {r["cluster"] for r in rows} == {0, 1, 2}
    assert rows[0]["cluster"] == rows[6]["cluster"]  # identical texts share a cluster
    described = json.loads(summary.read_text())
    assert sum(c["size"] for c in described) == 8 and all(c["central"] for c in described)
    code, _, err = run(capsys, "cluster", str(lines), "-m", str(tiny_model_dir), "--clusters", "20")
    assert code == 1 and "asked for 20 clusters but there are only 8 items" in err


def test_classify_train_predict_and_zero_shot(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "train.csv"
    with data.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for t, lab in zip(TEXTS[:6], ["pet", "pet", "money", "money", "food", "food"], strict=True):
            w.writerow([t, lab])
    model_dir = tmp_path / "clf"
    code, _, err = run(
        capsys, "classify", "train", str(data), "-o", str(model_dir), "-m", str(tiny_model_dir)
    )
    assert code == 0, err
    assert sorted(p.name for p in model_dir.iterdir()) == ["classifier.json", "weights.safetensors"]
    assert json.loads((model_dir / "classifier.json").read_text())["classes"] == [
        "food",
        "money",
        "pet",
    ]
    code, out, err = run(
        capsys, "classify", "predict", str(data), "--column", "text", "-c", str(model_dir)
    )
    assert code == 0, err
    preds = jsonl(out)
    assert len(preds) == 6 and {p["label"] for p in preds} <= {"food", "money", "pet"}
    code, out, err = run(
        capsys, "classify", "zero-shot", str(data), "-m", str(tiny_model_dir),
        "--label", "pet=a cat", "--label", "money=stock markets",
    )  # fmt: skip
    assert code == 0, err
    assert {p["label"] for p in jsonl(out)} <= {"pet", "money"}
    code, _, err = run(
        capsys,
        "classify",
        "train",
        str(data),
        "-o",
        str(model_dir),
        "--label",
        "nope",
        "-m",
        str(tiny_model_dir),
    )
    assert code == 1 and "no column 'nope'" in err


def test_recommend_and_similar_over_an_index(tiny_encoder, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from distilmarco.index import Index

    db = tmp_path / "docs.db"
    ids = [f"d{i}" for i in range(len(TEXTS))]
    with Index(db, tiny_encoder) as ix:
        ix.add(ids, TEXTS)
        expected = ix.search_vector(ix.vectors(["d0"])[0], 3, exclude_ids=["d0"])
    code, out, err = run(capsys, "recommend", "--index", str(db), "--like", "d0", "-k", "3")
    assert code == 0, err
    got = jsonl(out)
    assert [r["id"] for r in got] == [h.id for h in expected] and got[0]["id"] == "d6"
    assert "d0" not in [r["id"] for r in got]
    code, out, err = run(
        capsys, "recommend", "--index", str(db), "--like", "d0", "--unlike", "d6", "-k", "8"
    )
    assert code == 0, err
    assert {r["id"] for r in jsonl(out)} == set(ids) - {"d0", "d6"}
    code, out, err = run(capsys, "similar", "--index", str(db), "--id", "d0", "-k", "1")
    assert code == 0 and jsonl(out)[0]["id"] == "d6"
    code, out, err = run(capsys, "similar", TEXTS[2], "--index", str(db), "-k", "1")
    assert code == 0 and jsonl(out)[0]["id"] == "d2"
    code, out, err = run(capsys, "dedup", "--index", str(db), "--threshold", "0.9999")
    assert code == 0 and jsonl(out)[0]["ids"] == ["d0", "d6"]
    code, _, err = run(capsys, "recommend", "--index", str(db), "--like", "nope")
    assert code == 1 and "nope" in err


def test_recommend_over_a_file(tiny_model_dir: Path, lines: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    code, out, err = run(
        capsys, "recommend", "-i", str(lines), "--like", "0", "-k", "2", "-m", str(tiny_model_dir)
    )
    assert code == 0, err
    rows = jsonl(out)
    assert rows[0]["row"] == 6 and all(r["row"] != 0 for r in rows)
    code, _, err = run(
        capsys, "recommend", "-i", str(lines), "--like", "cat", "-m", str(tiny_model_dir)
    )
    assert code == 1 and "row numbers" in err


def test_bad_inputs_give_clear_errors(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    one = tmp_path / "one.txt"
    one.write_text("only one\n")
    m = str(tiny_model_dir)
    cases = [
        (["dedup", str(empty), "-m", m], "holds no texts"),
        (["dedup", str(one), "-m", m], "at least two items, got 1"),
        (["cluster", str(one), "-m", m, "--clusters", "1"], "at least 2 items, got 1"),
        (["map", str(one), "-o", str(tmp_path / "m.html"), "-m", m], "at least 3 items, got 1"),
        (["map", str(one), "-o", str(tmp_path / "m.svg"), "-m", m], "must end in .html or .png"),
        (["similar", "x", "-m", m], "give --index with TEXT or --id"),
        (
            ["classify", "train", str(one), "-o", str(tmp_path / "c"), "-m", m],
            "labels need a table",
        ),
        (["dedup", str(one), "--method", "magic", "-m", m], "unknown method 'magic'"),
        (["cluster", str(one), "--method", "magic", "-m", m], "unknown clustering method 'magic'"),
        (["similar", "--index", str(tmp_path / "none.db"), "--id", "x"], "does not exist"),
    ]
    for args, message in cases:
        code, _, err = run(capsys, *args)
        assert code == 1 and message in " ".join(err.split()), (args, err)


def _chromium_dom(page: Path, profile: Path) -> tuple[str, str]:
    proc = subprocess.run(
        [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--no-first-run", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
            "--dump-dom", page.as_uri(),
        ],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return proc.stdout, proc.stderr


def test_map_html_in_headless_chromium_and_png(
    tiny_model_dir: Path, lines: Path, tmp_path: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    if not Path(CHROMIUM).exists():
        pytest.skip(f"headless Chromium is not installed at {CHROMIUM}")
    page = tmp_path / "map.html"
    code, _, err = run(
        capsys,
        "map",
        str(lines),
        "-o",
        str(page),
        "-m",
        str(tiny_model_dir),
        "--projection",
        "pca",
        "--clusters",
        "3",
    )
    assert code == 0, err
    # Hover the first point from a script appended for the test, and record what the tooltip says.
    html = page.read_text(encoding="utf-8")
    probe = (
        "<script>var c = document.querySelector('circle');"
        "c.dispatchEvent(new MouseEvent('mousemove', {bubbles: true, clientX: 5, clientY: 5}));"
        "document.body.dataset.tip = document.getElementById('tip').textContent;</script></body>"
    )
    probed = tmp_path / "probed.html"
    probed.write_text(html.replace("</body>", probe), encoding="utf-8")
    dom, log = _chromium_dom(probed, tmp_path / "profile")
    assert f'data-points="{len(TEXTS)}"' in dom
    assert dom.count("<circle") == len(TEXTS)
    assert "data-error" not in dom and "Uncaught" not in log
    assert f"] {TEXTS[0]}" in dom.split('data-tip="', 1)[1].split('"', 1)[0]
    assert dom.count('class="off"') == 0 and dom.count("cluster ") >= 3  # legend entries

    png = tmp_path / "map.png"
    code, _, err = run(
        capsys,
        "map",
        str(lines),
        "-o",
        str(png),
        "-m",
        str(tiny_model_dir),
        "--projection",
        "pca",
        "--width",
        "500",
        "--height",
        "300",
    )
    assert code == 0, err
    import matplotlib.image as mpimg

    assert mpimg.imread(png).shape[:2] == (300, 500)
    assert np.isfinite(mpimg.imread(png)).all()


def test_map_coloured_by_a_label_column(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "rows.jsonl"
    kinds = ["pet", "pet", "money", "money", "food", "food", "pet", "sport"]
    data.write_text(
        "".join(
            json.dumps({"text": t, "kind": k}) + "\n" for t, k in zip(TEXTS, kinds, strict=True)
        ),
        encoding="utf-8",
    )
    page = tmp_path / "map.html"
    code, _, err = run(
        capsys,
        "map",
        str(data),
        "-o",
        str(page),
        "--label-column",
        "kind",
        "--projection",
        "pca",
        "-m",
        str(tiny_model_dir),
    )
    assert code == 0, err
    payload = page.read_text(encoding="utf-8").split('id="data">', 1)[1].split("</script>", 1)[0]
    data_json = json.loads(payload)
    assert data_json["label"] == kinds and data_json["text"] == TEXTS
    assert [name for name, _ in data_json["legend"]] == ["pet", "money", "food", "sport"]
    assert len(set(data_json["colour"])) == 4
