"""Line-level parsing shared by the test-collection readers: every error names the file and line."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from distilmarco.errors import FormatError, InputError


def existing_file(path: Path) -> Path:
    if not path.is_file():
        raise InputError(f"{path} does not exist")
    return path


def split_lines(path: Path) -> Iterator[tuple[int, list[str]]]:
    with open(existing_file(path), encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            fields = line.split()
            if fields:
                yield n, fields


def parse_int(text: str, path: Path, n: int, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise FormatError(f"{path}:{n}: {what} {text!r} is not an integer") from None


def parse_float(text: str, path: Path, n: int, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise FormatError(f"{path}:{n}: {what} {text!r} is not a number") from None


def natural_key(text: str) -> tuple[int, str]:
    """Sort key: numeric ids in numeric order, then the others by text."""
    return (int(text), "") if text.isdigit() else (1 << 62, text)
