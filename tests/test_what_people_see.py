"""What people see (issue 26 item 11): the server answers the README's first curl and serves its
API docs offline; plots show every mode and the differences; clustering reports noise and whole
words; map colours are distinct; classifiers report validation and accuracy, and zero-shot can
say "none of these"; the search page heads hits by title, marks only query words and has a
shareable ?q= address."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from distilmarco.server import ServerSettings, create_app


@pytest.fixture(scope="module")
def client(tiny_encoder):  # type: ignore[no-untyped-def]
    with TestClient(create_app(ServerSettings(), tiny_encoder), base_url="http://127.0.0.1") as c:
        yield c


def test_embeddings_request_without_model(client, tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    reply = client.post("/v1/embeddings", json={"input": ["how do planes fly?"]})
    assert reply.status_code == 200, reply.text
    got = np.array(reply.json()["data"][0]["embedding"])
    want = tiny_encoder.encode(["how do planes fly?"], normalize=True)[0]
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_docs_are_served_from_local_files(client) -> None:  # type: ignore[no-untyped-def]
    page = client.get("/docs")
    assert page.status_code == 200
    assert not re.findall(r"https?://", page.text)  # nothing from a CDN
    assets = re.findall(r'(?:src|href)="(/docs/assets/[^"]+)"', page.text)
    assert len(assets) == 3
    for asset in assets:
        got = client.get(asset)
        assert got.status_code == 200 and len(got.content) > 500


def test_plot_of_several_modes_has_a_bar_per_mode(tmp_path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("matplotlib")
    from distilmarco.cli.eval_run import plot_values
    from distilmarco.evaluation.compare import CompareRecord, MetricKey
    from distilmarco.evaluation.plots import bar_chart

    figures = {"dense nDCG@10": 0.38, "dense MRR@10": 0.54, "bm25 nDCG@10": 0.36,
               "bm25 MRR@10": 0.53, "hybrid nDCG@10": 0.41, "hybrid MRR@10": 0.58}  # fmt: skip
    metrics = {MetricKey(*name.split(" ")): value for name, value in figures.items()}
    record = CompareRecord(
        backend="onnx", precision="fp32", metrics=metrics, deltas={}, texts_per_second=100.0,
        tokens_per_second=None, seconds=None, error=None,
    )  # fmt: skip
    values, _, metric = plot_values([record])
    assert metric == "nDCG@10"
    assert values == {"onnx/fp32 dense": 0.38, "onnx/fp32 bm25": 0.36, "onnx/fp32 hybrid": 0.41}
    chart = bar_chart(tmp_path / "ir.png", values, title="ir", ylabel=metric)
    assert chart.bars == ("onnx/fp32 dense", "onnx/fp32 bm25", "onnx/fp32 hybrid")
    assert chart.path.stat().st_size > 1000


def test_sts_plot_axis_shows_the_differences(tmp_path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("matplotlib")
    from distilmarco.evaluation.plots import bar_chart

    values = {"torch/fp32": 0.8203, "onnx/fp32": 0.8203, "onnx/int8": 0.8171}
    chart = bar_chart(tmp_path / "sts.png", values, title="sts", ylabel="spearman")
    bottom, top = chart.ylim
    # the 0.0032 difference takes at least a quarter of the axis, and every bar stays in view
    assert (0.8203 - 0.8171) / (top - bottom) >= 0.25
    assert bottom < 0.8171 and top > 0.8203
    far = bar_chart(tmp_path / "far.png", {"a": 0.2, "b": 0.8}, title="t", ylabel="y")
    assert far.ylim[0] == 0.0  # bars that differ a lot keep a zero baseline


def test_cluster_keywords_are_whole_words() -> None:
    import numpy as np

    from distilmarco.apps.cluster import content_words, keywords

    assert content_words("It doesn't work, isn't it? I've lost my card's PIN") == [
        "it", "work", "it", "lost", "my", "card", "pin",
    ]  # fmt: skip
    texts = ["My card doesn't work", "The card isn't working", "I've lost my card",
             "Where's my refund?", "I haven't got my refund", "Refund hasn't arrived"]  # fmt: skip
    found = keywords(texts, np.array([0, 0, 0, 1, 1, 1]), n_keywords=5)
    words = {w for ws in found.values() for w in ws}
    assert "card" in found[0] and "refund" in found[1]
    assert not words & {"doesn", "isn", "ve", "haven", "hasn", "t", "s"}


def test_hdbscan_says_how_many_texts_are_noise(tiny_model_dir, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    import json

    from distilmarco.cli import main

    lines = tmp_path / "t.txt"
    lines.write_text("".join(f"text number {i} about topic {i % 3}\n" for i in range(30)))
    args = ["cluster", str(lines), "--method", "hdbscan", "--min-size", "5"]
    assert main([*args, "-m", str(tiny_model_dir), "--backend", "torch"]) == 0
    captured = capsys.readouterr()
    rows = [json.loads(line) for line in captured.out.splitlines()]
    noise = sum(r["cluster"] == -1 for r in rows)
    assert f"{noise} of 30 texts are noise" in captured.err


def _banking_sample(path, split: str, per_label: int) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    import csv

    from conftest import read_banking77

    texts, labels = read_banking77(split)
    keep = ["card_arrival", "exchange_rate", "lost_or_stolen_card", "pin_blocked", "top_up_failed"]
    rows = []
    for c in keep:
        rows += [[t, c] for t, lab in zip(texts, labels, strict=True) if lab == c][:per_label]
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["text", "category"], *rows])
    return [(t, c) for t, c in rows]


@pytest.mark.slow
def test_classify_reports_validation_and_test_accuracy(minilm_dir, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    import json

    from distilmarco.cli import main

    _banking_sample(tmp_path / "train.csv", "train", 15)
    gold = _banking_sample(tmp_path / "test.csv", "test", 6)
    engine = ["-m", str(minilm_dir), "--backend", "torch"]
    clf = str(tmp_path / "clf")
    args = ["classify", "train", str(tmp_path / "train.csv"), "--label-column", "category"]
    assert main([*args, "-o", clf, *engine]) == 0
    said = capsys.readouterr().err
    found = re.search(r"validation accuracy (\d\.\d{4}) on (\d+) held-out texts", said)
    assert found is not None, said
    assert int(found.group(2)) == 5 * 3 and float(found.group(1)) >= 0.8  # 3 of 15 per label
    assert main(["classify", "predict", str(tmp_path / "test.csv"), "-c", clf, *engine]) == 0
    captured = capsys.readouterr()
    rows = [json.loads(line) for line in captured.out.splitlines()]
    right = sum(r["label"] == c for r, (_, c) in zip(rows, gold, strict=True))
    assert f"accuracy {right / len(gold):.4f} on {len(gold)} labelled texts" in captured.err
    assert right / len(gold) >= 0.8


def test_zero_shot_threshold_says_none_of_these(minilm_dir, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    import json

    from distilmarco.cli import main

    texts = tmp_path / "t.txt"
    texts.write_text("I want my money back\nmy card does not work\nthe weather is lovely today\n")
    args = ["classify", "zero-shot", str(texts), "-m", str(minilm_dir), "--backend", "torch",
            "--label", "refund=I want a refund", "--label", "card=my card is broken"]  # fmt: skip
    assert main([*args, "--threshold", "0.45"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["label"] == "none" for r in rows] == [r["score"] < 0.45 for r in rows]
    assert [r["label"] for r in rows] == ["refund", "card", "none"]


def test_map_gives_77_labels_77_colours_and_whole_names() -> None:
    import json

    import numpy as np

    from distilmarco.apps.maps import render_html

    names = [f"label number {i} with a rather long descriptive name" for i in range(77)]
    coords = np.random.default_rng(0).random((154, 2)).astype(np.float32)
    page = render_html(coords, [f"text {i}" for i in range(154)], names * 2, title="t")
    data = json.loads(re.search(r'id="data">(.*?)</script>', page, re.S).group(1))  # type: ignore[union-attr]
    colours = [c for _, c in data["legend"]]
    assert len(colours) == 77 and len(set(colours)) == 77
    assert [n for n, _ in data["legend"]] == names  # full names, in first-seen order
    assert "nowrap" not in page  # long names wrap in the legend instead of being cut
    assert data["colour"][0] == data["colour"][77] == colours[0]


def _page_functions(calls: str) -> object:
    """Run the search page's pure functions in node and return what ``calls`` evaluates to."""
    import json
    import shutil
    import subprocess
    from importlib import resources

    node = shutil.which("node")
    if node is None:
        pytest.fail("node is needed to run the search page's functions")
    page = resources.files("distilmarco.server").joinpath("static/index.html").read_text("utf-8")
    start = page.index("// --- pure functions")
    end = page.index("// --- end of pure functions ---")
    script = page[start:end] + f"\nprocess.stdout.write(JSON.stringify({calls}));\n"
    done = subprocess.run([node, "-e", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_search_page_heads_by_title_marks_query_words_and_reads_the_address() -> None:
    got = _page_functions(
        "{"
        "title: hitTitle({id: 'cran-1', metadata: {title: ' Wings in a slipstream '}}),"
        "file: hitTitle({id: '/d/notes/wings.md', metadata: {'distilmarco:source': '/d/notes/wings.md'}}),"
        "plain: hitTitle({id: 'cran-2', metadata: {}}),"
        "words: queryWords('How do planes fly? planes'),"
        "marks: markWords('A plane flies: planes need lift [1].', queryWords('planes fly')),"
        "asked: readParams('?q=how%20do%20planes%20fly&mode=hybrid&k=5'),"
        "bad: readParams('?q=x&mode=magic&k=900'),"
        "address: searchAddress('how do planes fly?', 'bm25', 3)"
        "}"
    )
    assert got == {
        "title": "Wings in a slipstream",
        "file": "wings.md",
        "plain": "cran-2",
        "words": ["how", "planes", "fly"],
        "marks": [["A ", False], ["plane", True], [" flies: ", False], ["planes", True],
                  [" need lift [1].", False]],
        "asked": {"q": "how do planes fly", "mode": "hybrid", "k": 5},
        "bad": {"q": "x", "mode": "dense", "k": 10},
        "address": "?q=how+do+planes+fly%3F&mode=bm25&k=3",
    }  # fmt: skip
