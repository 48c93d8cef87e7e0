"""Hard-negative mining from our index: never a positive, rank range and margins respected."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distilmarco import Encoder, Index
from distilmarco.errors import InputError
from distilmarco.training.mining import (
    Candidate,
    MiningConfig,
    _key,
    candidates,
    choose,
    mine,
    positive_score,
)

DOCS = {
    "d1": "Wings make lift because air moves faster over the top.",
    "d2": "Birds flap their wings to fly through the air.",
    "d3": "Helicopters use rotors to make lift.",
    "d4": "Paris is the capital and largest city of France.",
    "d5": "Lyon is a large city in France.",
    "d6": "Rinse the rice, then simmer it with water.",
    "d7": "Pasta is boiled in salted water.",
    "d8": "Rayleigh scattering makes the sky blue.",
    "d9": "Jet engines push air backwards.",
    "d10": "The air over a wing moves fast and makes lift.",
}


def test_choose_hand_checked() -> None:
    found = [
        Candidate("a", "A", 0.95, 0),  # above the positive's score
        Candidate("b", "B", 0.80, 1),  # the positive itself (by text)
        Candidate("c", "C", 0.78, 2),  # within 5% of the positive: dropped by the margin
        Candidate("d", "D", 0.70, 3),
        Candidate("e", "E", 0.60, 4),
        Candidate("f", "F", 0.50, 5),  # outside the rank range
    ]
    cfg = MiningConfig(negatives=2, range_min=1, range_max=5, relative_margin=0.05)
    got = choose(found, positive=0.8, excluded={_key("B")}, cfg=cfg)
    assert [c.id for c in got] == ["d", "e"]
    cfg = MiningConfig(negatives=5, range_min=0, range_max=6, absolute_margin=0.15)
    assert [c.id for c in choose(found, 0.8, {"b"}, cfg)] == ["e", "f"]
    assert [c.id for c in choose(found, 0.8, set(), MiningConfig(negatives=1))] == ["a"]


def test_bad_mining_options_are_refused() -> None:
    with pytest.raises(InputError, match="rank range"):
        MiningConfig(range_min=5, range_max=5)
    with pytest.raises(InputError, match="sources"):
        MiningConfig(sources=())
    with pytest.raises(InputError, match="relative_margin"):
        MiningConfig(relative_margin=1.5)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["n-tuple", "triplet"])
def test_mine_from_an_index(tiny_model_dir: Path, tmp_path: Path, fmt: str) -> None:
    pairs = tmp_path / "pairs.jsonl"
    rows = [
        {"query": "how do wings make lift", "positive": DOCS["d1"]},
        {"query": "how do wings make lift", "positive": DOCS["d10"]},
        {"query": "capital of france", "positive": DOCS["d4"]},
    ]
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "mined.jsonl"
    cfg = MiningConfig(
        negatives=2, range_min=1, range_max=8, relative_margin=0.0, output_format=fmt
    )  # type: ignore[arg-type]
    with Index(tmp_path / "i.db", Encoder(tiny_model_dir)) as index:
        index.add(list(DOCS), list(DOCS.values()))
        stats = mine(index, pairs, out, cfg)
        lines = [json.loads(x) for x in out.read_text().splitlines()]
        assert stats.pairs == 3 and stats.written == len(lines) > 0
        positives: dict[str, set[str]] = {}
        for r in rows:
            positives.setdefault(r["query"], set()).add(r["positive"])
        for line in lines:
            negs = line["negatives"] if fmt == "n-tuple" else [line["negative"]]
            ids = line["negative_ids"] if fmt == "n-tuple" else [line["negative_id"]]
            if fmt == "n-tuple":
                assert len(negs) == 2
            ranked = {c.id: c for c in candidates(index, line["query"], cfg)}
            pos = positive_score(index, line["query"], line["positive"])
            for doc_id, text in zip(ids, negs, strict=True):
                assert text == DOCS[doc_id]
                assert text not in positives[line["query"]]  # never a positive of the query
                assert 1 <= ranked[doc_id].rank < 8
                assert ranked[doc_id].score <= pos


def test_mining_an_empty_index_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    from distilmarco.errors import NotFoundError

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"query": "q", "positive": "p"}\n')
    with (
        Index(tmp_path / "i.db", Encoder(tiny_model_dir)) as index,
        pytest.raises(NotFoundError, match="holds no documents"),
    ):
        mine(index, str(pairs), tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists()
