"""Parallel sentences for distillation: a TSV file (``source<TAB>translation[<TAB>...]``, or a
source alone for same-language distillation) or a Tatoeba folder (``tatoeba.<lang>-eng.<lang>``
beside ``tatoeba.<lang>-eng.eng``, line i of one translating line i of the other; English is the
source).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from distilmarco.errors import FormatError, InputError

_TATOEBA = re.compile(r"^tatoeba\.([a-z]{2,3})-eng\.\1$")


@dataclass(frozen=True)
class ParallelSet:
    """One group of aligned sentences: a TSV file, or one Tatoeba language.

    ``translations[i]`` holds the translations of ``sources[i]`` (none for monolingual rows).
    """

    name: str
    sources: tuple[str, ...]
    translations: tuple[tuple[str, ...], ...]

    def __post_init__(self) -> None:
        if len(self.sources) != len(self.translations):
            raise InputError(f"{self.name}: sources and translations differ in length")

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """(source, translation) for every translation of every row."""
        return [(s, t) for s, ts in zip(self.sources, self.translations, strict=True) for t in ts]

    def rows(self, start: int, stop: int | None) -> ParallelSet:
        """Rows [start, stop) of this set (the fixed train / test split of a corpus)."""
        return ParallelSet(self.name, self.sources[start:stop], self.translations[start:stop])


@dataclass(frozen=True)
class RowRange:
    """Rows [start, stop) of every set; ``stop`` None runs to the end. Parsed from ``START:STOP``."""

    start: int = 0
    stop: int | None = None

    def __post_init__(self) -> None:
        if self.start < 0 or (self.stop is not None and self.stop <= self.start):
            raise InputError(f"row range {self.start}:{self.stop} is empty or negative")

    @classmethod
    def parse(cls, text: str) -> RowRange:
        start, sep, stop = text.partition(":")
        try:
            if not sep:
                raise ValueError
            return cls(int(start or 0), int(stop) if stop else None)
        except ValueError:
            raise InputError(
                f"rows {text!r} must be START:STOP, e.g. 0:800 or 800: (to the end)"
            ) from None


def read_parallel(
    path: Path, rows: RowRange | None = None, languages: tuple[str, ...] | None = None
) -> list[ParallelSet]:
    """The parallel sets at ``path`` (a TSV file or a Tatoeba folder), each cut to ``rows``."""
    path = Path(path)
    if path.is_dir():
        sets = _read_tatoeba(path, languages)
    elif path.is_file():
        if languages:
            raise InputError("--languages applies to a Tatoeba folder, not to a TSV file")
        sets = [_read_tsv(path)]
    else:
        raise InputError(f"parallel data {path} does not exist")
    if rows is not None:
        sets = [s.rows(rows.start, rows.stop) for s in sets]
    for s in sets:
        if not s.sources:
            raise InputError(f"{s.name}: no sentences in the rows asked for")
    return sets


def _read_tsv(path: Path) -> ParallelSet:
    sources: list[str] = []
    translations: list[tuple[str, ...]] = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            cells = line.split("\t")
            if any(not c.strip() for c in cells):
                raise FormatError(f"{path}:{n}: an empty sentence (column {_empty(cells)})")
            sources.append(cells[0])
            translations.append(tuple(cells[1:]))
    if not sources:
        raise FormatError(f"{path}: no sentences (expected source<TAB>translation lines)")
    return ParallelSet(path.name, tuple(sources), tuple(translations))


def _empty(cells: list[str]) -> int:
    return next(i for i, c in enumerate(cells, start=1) if not c.strip())


def _read_tatoeba(folder: Path, languages: tuple[str, ...] | None) -> list[ParallelSet]:
    found = sorted(m.group(1) for p in folder.iterdir() if (m := _TATOEBA.match(p.name)))
    if not found:
        raise InputError(
            f"{folder} holds no tatoeba.<lang>-eng.<lang> files (and is not a TSV file)"
        )
    wanted = languages or tuple(found)
    missing = [lang for lang in wanted if lang not in found]
    if missing:
        raise InputError(
            f"{folder} has no Tatoeba pairs for {', '.join(missing)}; it has {', '.join(found)}"
        )
    sets = []
    for lang in wanted:
        other = folder / f"tatoeba.{lang}-eng.{lang}"
        english = folder / f"tatoeba.{lang}-eng.eng"
        src = _lines(english)
        trg = _lines(other)
        if len(src) != len(trg):
            raise FormatError(
                f"{english} has {len(src)} lines but {other} has {len(trg)}; they must align"
            )
        sets.append(ParallelSet(lang, tuple(src), tuple((t,) for t in trg)))
    return sets


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise InputError(f"{path} does not exist")
    lines = path.read_text(encoding="utf-8").splitlines()
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            raise FormatError(f"{path}:{n}: an empty sentence")
    return lines
