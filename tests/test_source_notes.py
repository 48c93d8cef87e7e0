"""Comments and docstrings say why in a sentence; timings, CPU models and throughput figures live
in ``benchmarks/results/`` (``engine-notes.md``). This scans every comment and docstring under
``src/distilmarco`` (``index/`` joins once its redesign lands; see issue 19)."""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import distilmarco

SRC = Path(distilmarco.__file__).parent
NOT_YET = ("index",)  # packages still being rewritten elsewhere
MEASUREMENT = re.compile(
    r"\b(Xeon|EPYC|Ryzen|Zen ?\d|AVX-512 \w+ CPU)\b"  # CPU models
    r"|\d[\d,.]* ?(?:useful )?(ms|µs|tokens/s|tok/s|texts/s|q/s|docs/s|GFLOP/s)\b"  # timings, throughput
    r"|\b(previous|earlier) (session|release|run)s?\b",  # history
)


def _prose(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every comment and docstring of a Python file."""
    source = path.read_text(encoding="utf-8")
    found = [
        (tok.start[0], tok.string)
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type == tokenize.COMMENT
    ]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node, clean=False)
            if doc and node.body:
                found.append((node.body[0].lineno, doc))
    return found


def test_no_timings_cpu_models_or_history_in_comments_and_docstrings() -> None:
    offending = [
        f"{path.relative_to(SRC)}:{line}: {match.group(0)!r}"
        for path in sorted(SRC.rglob("*.py"))
        if path.relative_to(SRC).parts[0] not in NOT_YET
        for line, text in _prose(path)
        for match in [MEASUREMENT.search(text)]
        if match
    ]
    assert offending == [], "\n".join(offending)


def test_the_scan_finds_what_it_looks_for(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        '"""Fast: 3,823 tokens/s."""\n\nX = 1  # took 12.4 ms\n\n\ndef f() -> None:\n'
        '    """Measured on a Xeon in an earlier session."""\n',
        encoding="utf-8",
    )
    hits = [MEASUREMENT.findall(text) for _, text in _prose(sample)]
    found = [next(g for g in groups if g) for hit in hits for groups in hit]
    assert found == ["ms", "tokens/s", "Xeon", "earlier"]
