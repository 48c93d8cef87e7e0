"""The index's source stays readable: small modules, and no measurements in comments or docstrings
(those live in benchmarks/results/index-notes.md)."""

from __future__ import annotations

import re
from pathlib import Path

import distilmarco.index

INDEX = Path(distilmarco.index.__file__).parent
ANN_FILES = {"ann.py", "ann_file.py", "ann_part.py"}  # becoming the ann package, checked there
MEASUREMENT = re.compile(
    r"\b\d+(\.\d+)?\s?(us|µs|ms)\b|\bGHz\b|\bZen\b|\bXeon\b|\bAVX|\bq/s\b", re.IGNORECASE
)


def modules() -> list[Path]:
    return [p for p in sorted(INDEX.rglob("*.py")) if p.name not in ANN_FILES]


def test_index_modules_stay_under_400_lines() -> None:
    long = {p.name: n for p in modules() if (n := len(p.read_text().splitlines())) >= 400}
    assert not long, long


def test_no_timings_or_cpu_names_in_index_source() -> None:
    found = [
        f"{p.name}:{i}: {line.strip()}"
        for p in modules()
        for i, line in enumerate(p.read_text().splitlines(), start=1)
        if MEASUREMENT.search(line)
    ]
    assert not found, "\n".join(found)
