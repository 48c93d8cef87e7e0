"""House rules for ``src/`` that a reviewer would otherwise check by eye: no module over 400
lines, and no comment or docstring that carries a measurement (a timing, a throughput, a speed-up),
the CPU it was measured on, or the history of the code (issue numbers, what it used to do).
Those belong in commit bodies and ``benchmarks/results/``; the source says what is and why."""

from __future__ import annotations

import ast
import io
import re
import tokenize
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
MAX_LINES = 400

_NUMBER = r"\d[\d,]*(?:\.\d+)?"
TIMING = re.compile(
    rf"""
    {_NUMBER}\s?(?:ms|µs|us|ns|s|secs?|seconds|minutes?)\b              # 12.4 ms, 33 s
    | {_NUMBER}\s?(?:useful\s+)?(?:q|queries|texts|tokens|sentences|rows|requests|it)\s?/\s?s\b
    | {_NUMBER}\s+\w+\s+per\s+second\b                                  # 3,640 texts per second
    | {_NUMBER}\s?[x×]\s+(?:faster|slower|quicker)\b                    # 2.3x faster
    | {_NUMBER}\s?%\s+(?:faster|slower|quicker)\b
    | {_NUMBER}-(?:second|minute|ms)\b                                   # 4-second bursts
    | \bbest\s+of\s+\d                                                  # best of 3
    | \bmeasured\s+(?:here\s*\(|on\s+(?:a|an)\b|on\s+the\s+(?:full|same)\b)
    | \bmedian\s+of\s+(?:\d+|two|three|four|five|ten)\s+(?:runs|passes|tries)\b
    """,
    re.I | re.X,
)
CPU_MODEL = re.compile(
    r"""\bxeon\b | \bepyc\b | \bryzen\b | \bthreadripper\b | \bcore\s?i[3579]\b | \bzen\s?[1-5]\b
    | \bsapphire\s+rapids\b | \b(?:ice|cascade|coffee|alder|raptor)\s+lake\b | \bskylake\b
    | \bgraviton\d?\b | \bneoverse\b | \bapple\s+m[1-4]\b""",
    re.I | re.X,
)
# Instruction sets explain why a kernel is fast (fine); beside a timing they name the machine a
# number was measured on (not fine).
ISA = re.compile(r"\bavx[-\d]*|\bvnni\b|\bamx\b|\bneon\b", re.I)
HISTORY = re.compile(
    r"""\bissues?\s*\#?\d+ | \b(?:PR|pull\s+request)\s*\#?\d+
    | \b(?:we|it|this|that|they|the\s+code)\s+used\s+to\b | \bused\s+to\s+be\b
    | \bearlier\s+(?:we|versions?|attempts?|code|choice|design)\b
    | \bwe\s+(?:tried|first|once|had\s+to)\b | \bpreviously\b | \bformerly\b | \boriginally\b
    | \bthe\s+choice\s+before\b | \bbefore\s+(?:this|the)\s+(?:change|fix|rewrite|refactor)\b
    | \bin\s+the\s+past\b | \bthe\s+old\s+(?:code|version|way|design)\b""",
    re.I | re.X,
)


@dataclass(frozen=True)
class Prose:
    """One comment block (consecutive comment lines) or one docstring paragraph."""

    path: Path
    line: int
    text: str


def prose(path: Path) -> list[Prose]:
    source = path.read_text(encoding="utf-8")
    blocks: list[Prose] = []
    last = -2  # the line of the last whole-line comment, which a next one continues
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type != tokenize.COMMENT:
            continue
        line, text = tok.start[0], tok.string.lstrip("#").strip()
        whole_line = tok.line.lstrip().startswith("#")
        if whole_line and line == last + 1:
            blocks[-1] = Prose(path, blocks[-1].line, blocks[-1].text + " " + text)
        else:
            blocks.append(Prose(path, line, text))
        last = line if whole_line else -2
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node, clean=True)
            start = node.body[0].lineno if doc else 0
            for paragraph in (doc or "").split("\n\n"):
                blocks.append(Prose(path, start, " ".join(paragraph.split())))
    return blocks


def problems(block: Prose) -> list[str]:
    found = []
    timing = TIMING.search(block.text)
    if timing:
        found.append(f"a measurement ({timing.group(0)!r})")
    for pattern, what in ((CPU_MODEL, "a CPU model"), (HISTORY, "history of the code")):
        hit = pattern.search(block.text)
        if hit:
            found.append(f"{what} ({hit.group(0)!r})")
    isa = ISA.search(block.text)
    if isa and timing:
        found.append(f"the instruction set a number was measured with ({isa.group(0)!r})")
    return found


def sources() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def test_no_source_file_over_400_lines() -> None:
    long = {
        str(p.relative_to(SRC)): n
        for p in sources()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"split these by responsibility (lines): {long}"


def test_no_measurements_cpu_names_or_history_in_source_prose() -> None:
    found = [
        f"{b.path.relative_to(SRC)}:{b.line}: {'; '.join(why)}"
        for p in sources()
        for b in prose(p)
        if (why := problems(b))
    ]
    assert not found, "move these to benchmarks/results/ or the commit body:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "text",
    [
        "exact 20k rows in 33 s vs 136 s for building",
        "a single query took 12.4 ms there",
        "costs 25-60 us when the page cache is cold",
        "Mixed workload: 3,662 useful tokens/s at 2,048",
        "the int8 graph ran 2.3x faster",
        "fused graphs, 2 threads, best of 3",
        "ef 160, median of four passes",
        "Measured on a 2-core Zen 3",
        "Intel Xeon with two threads",
        "Measured here (all-MiniLM-L6-v2, twelve bursts alternating 32 and 128 clients)",
        "16,384 on an AVX-512 machine: 12 ms",
        "the threshold from issue 12",
        "the old format used to be float16",
        "FAISS float16 (the choice before)",
        "earlier we kept one graph",
    ],
)
def test_the_prose_rules_catch_real_cases(text: str) -> None:
    assert problems(Prose(Path("x.py"), 1, text))


@pytest.mark.parametrize(
    "text",
    [
        "x86 CPUs without VNNI multiply signed int8 in one instruction",
        "CPUs with AVX512-BF16 or AMX compute it natively",
        "the winner and every candidate's useful tokens per second",
        "the fastest engine for the requested precision, measured here.",
        "measured on this machine the first time a model is loaded",
        "a remembered choice that no longer builds is measured again",
        "the key is used to sign the token; the index was built with another model",
        "Retry-After in seconds, 1 to 60",
        "the first 512 tokens of each text (BERT's limit)",
        "one step of 4 rows x 10 tokens",
    ],
)
def test_the_prose_rules_pass_ordinary_prose(text: str) -> None:
    assert problems(Prose(Path("x.py"), 1, text)) == []


def test_comment_blocks_and_docstring_paragraphs_are_read(tmp_path: Path) -> None:
    path = tmp_path / "m.py"
    path.write_text(
        '"""Module.\n\nTook 12\nms."""\n\n# one query\n# costs 3 ms\nx = 1  # fine\n',
        encoding="utf-8",
    )
    blocks = prose(path)
    assert [b.text for b in blocks if problems(b)] == ["one query costs 3 ms", "Took 12 ms."]
