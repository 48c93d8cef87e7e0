"""Every command the README shows, run exactly as written (issue 26 item 11), in a folder holding
the files they name: samples of the real data under ``../shared/data``, small files for the
rest, and the packaged all-MiniLM-L6-v2 as the model (``DISTILMARCO_MODEL``, as a user without
network access would set it). ``serve`` is captured before uvicorn starts, and the README's curl
lines are sent to the app it built."""

from __future__ import annotations

import csv
import json
import re
import shlex
from pathlib import Path

import pytest
from conftest import read_banking77, shared_data

from distilmarco.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_commands() -> list[str]:
    """The ``distilmarco`` and ``curl`` commands of the README's bash blocks, in order; lines
    continued with a backslash are joined and ``a && b`` gives two commands."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    found = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line.startswith(("distilmarco ", "curl ")):
                found.extend(part.strip() for part in line.split(" && "))
    return found


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _sandbox(root: Path) -> Path:
    """The working folder and every file the README's commands read."""
    work = root / "work"
    data = root / "shared" / "data"  # what ../shared/data means from the working folder
    texts, labels = read_banking77("train")
    test_texts, test_labels = read_banking77("test")
    kinds = ["card_arrival", "exchange_rate", "lost_or_stolen_card", "pin_blocked", "top_up_failed"]

    def pick(ts: list[str], ls: list[str], n: int) -> list[tuple[str, str]]:
        return [
            (t, k)
            for k in kinds
            for t in [t for t, lab in zip(ts, ls, strict=True) if lab == k][:n]
        ]

    def table(path: Path, rows: list[tuple[str, str]]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([("text", "category"), *rows])

    train = pick(texts, labels, 12)
    table(work / "labelled.csv", train)
    table(data / "banking77" / "train.csv", train)
    table(data / "banking77" / "test.csv", pick(test_texts, test_labels, 4))
    _write(work / "texts.txt", "".join(f"{t}\n" for t, _ in train))
    _write(work / "new.txt", "I want my money back\nmy card has not arrived yet\n")
    _write(work / "notes.txt", "planes fly because wings make lift\n\nboats float on water\n")
    for folder in ("docs", "notes"):
        _write(work / folder / "wings.md", "# Wings\nPlanes fly because their wings make lift.\n")
        _write(work / folder / "boats.txt", "Boats float because they displace water.\n")
        _write(work / folder / "pin.md", "Reset your PIN at any cash machine of our bank.\n")
    papers = [
        {"id": f"paper-{i}", "text": t, "abstract": t, "lang": "en", "year": 1960 + i}
        for i, (t, _) in enumerate(train[:6], start=1)
    ]
    _write(work / "papers.jsonl", "".join(json.dumps(p) + "\n" for p in papers))

    sts = (shared_data("stsbenchmark") / "sts-test.csv").read_text(encoding="utf-8").splitlines()
    _write(data / "stsbenchmark" / "sts-test.csv", "\n".join(sts[:40]) + "\n")
    cran = shared_data("cranfield")
    docs = (cran / "cran.all.1400").read_text(encoding="utf-8").split("\n.I ")
    _write(data / "cranfield" / "cran.all.1400", "\n.I ".join(docs[:60]) + "\n")
    queries = (cran / "cran.qry").read_text(encoding="utf-8").split("\n.I ")
    _write(data / "cranfield" / "cran.qry", "\n.I ".join(queries[:3]) + "\n")
    qrels = [
        line for line in (cran / "cranqrel").read_text(encoding="utf-8").splitlines()
        if int(line.split()[0]) <= 3 and int(line.split()[1]) <= 60
    ]  # fmt: skip
    _write(data / "cranfield" / "cranqrel", "\n".join(qrels) + "\n")

    from test_eval_ir import PASSAGES, _msmarco_sample

    _msmarco_sample(root / "home" / "data" / "msmarco")
    _write(work / "collection.tsv", "".join(f"{p}\t{t}\n" for p, t in PASSAGES.items()))
    _write(work / "q.tsv", "1\tapple\n2\tcherry\n")
    _write(work / "qrels.txt", "1 0 1 1\n2 0 4 1\n")
    _write(
        work / "top1000.tsv",
        "1\t1\tapple\t" + PASSAGES["1"] + "\n2\t4\tcherry\t" + PASSAGES["4"] + "\n",
    )
    beir = work / "path" / "to" / "beir" / "scifact"
    _write(
        beir / "corpus.jsonl",
        "".join(json.dumps({"_id": p, "title": "", "text": t}) + "\n" for p, t in PASSAGES.items()),
    )
    _write(
        beir / "queries.jsonl", '{"_id": "q1", "text": "apple"}\n{"_id": "q2", "text": "cherry"}\n'
    )
    _write(beir / "qrels" / "test.tsv", "query-id\tcorpus-id\tscore\nq1\t1\t1\nq2\t4\t1\n")
    # fine-tuning: (query, positive) pairs over enough documents for the mining ranks the README
    # asks for, and scored STS pairs for CoSENT
    for i, doc in enumerate(docs[1:41], start=1):
        _write(work / "docs" / f"cran-{i}.txt", doc.split("\n.W\n", 1)[-1] + "\n")
    pairs = [
        {"query": f"what does cranfield paper {i} study?", "positive": doc.split("\n.W\n", 1)[-1]}
        for i, doc in enumerate(docs[1:9], start=1)
    ]
    _write(work / "pairs.jsonl", "".join(json.dumps(p) + "\n" for p in pairs))
    scored = [row.split("\t") for row in sts[:40]]
    for name, rows in (("sts-train.jsonl", scored[:32]), ("sts-dev.jsonl", scored[32:])):
        _write(
            work / name,
            "".join(
                json.dumps({"sentence1": r[5], "sentence2": r[6], "score": float(r[4])}) + "\n"
                for r in rows
            ),
        )
    return work


def _curl(client, command: str) -> None:  # type: ignore[no-untyped-def]
    args = shlex.split(command, comments=True)[1:]
    url = next(a for a in args if a.startswith("localhost:"))
    body = args[args.index("-d") + 1]
    header = args[args.index("-H") + 1]
    name, _, value = header.partition(": ")
    reply = client.post(url.split("8080", 1)[1], content=body, headers={name: value})
    assert reply.status_code == 200, f"{command}: {reply.status_code} {reply.text}"
    assert len(reply.json()["data"][0]["embedding"]) == 384


@pytest.mark.slow
@pytest.mark.xdist_group("minilm_litert")  # its tflite export is test_tensorflow_litert.py's
def test_every_readme_command_runs_as_written(
    minilm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    commands = readme_commands()
    assert len(commands) >= 30 and sum(c.startswith("curl") for c in commands) == 2
    work = _sandbox(tmp_path)
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DISTILMARCO_MODEL", str(minilm_dir))
    served: list[object] = []
    monkeypatch.setattr("uvicorn.run", lambda app, **options: served.append(app))
    curls = []
    for command in commands:
        if command.startswith("curl "):
            curls.append(command)
            continue
        argv = [str(Path(a).expanduser()) if a.startswith("~") else a
                for a in shlex.split(command, comments=True)[1:]]  # fmt: skip
        code = main(argv)
        captured = capsys.readouterr()
        assert code == 0, f"{command}\n{captured.err}"
    assert len(served) == 1
    # the README's curl lines talk to localhost:8080, which the Host check admits
    with TestClient(served[0], base_url="http://localhost:8080") as client:  # type: ignore[arg-type]
        for command in curls:
            _curl(client, command)
    assert (work / "docs.db").is_file() and (work / "clf" / "classifier.json").is_file()
    assert (work / "map.html").is_file() and (work / "sts.png").is_file()
    assert (work / "my-model" / "model.safetensors").is_file()
    assert (work / "my-sts" / "model.safetensors").is_file()
