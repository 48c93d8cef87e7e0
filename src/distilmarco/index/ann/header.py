"""The ANN file's trailer: typed values, parsed defensively (nothing in a file is trusted).

A file is ``payload, header (JSON), its length (u64 little endian), MAGIC``; the payload holds
each part's FAISS graph (its stored vectors last), the slot -> chunk id arrays of all parts
(int64 little endian), one tombstone bitmap over all slots, then the rotation, if any.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from distilmarco.errors import IndexStoreError

MAGIC = b"DMANN05\n"  # at the end of the file; 01 and 02 (usearch) began with theirs
# files whose graphs this version no longer reads (one graph per file; float16 and M 16 parts):
# they are rebuilt from the store
OLDER_MAGICS = (b"DMANN03\n", b"DMANN04\n")
_LENGTH = struct.Struct("<Q")


@dataclass(frozen=True)
class AnnStamp:
    """What an ANN file claims to cover; checked against the store before it is trusted."""

    store_id: str
    seq: int
    count: int
    dimension: int
    metric: str


@dataclass(frozen=True)
class PartLayout:
    """Where one graph part lies in the payload: its FAISS serialisation is ``[start, end)``,
    whose last ``end - vectors_at`` bytes are the stored vectors of its ``slots`` slots."""

    start: int
    vectors_at: int
    end: int
    slots: int

    @property
    def vectors(self) -> tuple[int, int]:
        return self.vectors_at, self.end


@dataclass(frozen=True)
class AnnHeader:
    """The JSON header: the stamp, the parts' layout and the two checksums (of the stored vectors,
    and of everything else in the payload)."""

    stamp: AnnStamp
    parts: tuple[PartLayout, ...]
    rotation: bool
    payload_bytes: int
    xxh3_structure: int
    xxh3_vectors: int
    library: str

    @property
    def vector_ranges(self) -> list[tuple[int, int]]:
        return [p.vectors for p in self.parts]

    @property
    def graphs_end(self) -> int:
        return self.parts[-1].end if self.parts else 0

    @property
    def slots(self) -> int:
        return sum(p.slots for p in self.parts)

    def to_bytes(self) -> bytes:
        fields = {k: v for k, v in asdict(self).items() if k != "stamp"}
        return json.dumps({**asdict(self.stamp), **fields}).encode()

    @classmethod
    def from_json(cls, data: Any) -> AnnHeader:
        """Raises TypeError, KeyError or ValueError naming what is wrong."""
        if not isinstance(data, dict):
            raise TypeError("not an object")
        stamp = AnnStamp(
            _field(data, "store_id", str),
            _field(data, "seq", int),
            _field(data, "count", int),
            _field(data, "dimension", int),
            _field(data, "metric", str),
        )
        parts = []
        for part in _field(data, "parts", list):
            if not isinstance(part, dict):
                raise TypeError("parts")
            values = [_field(part, k, int) for k in ("start", "vectors_at", "end", "slots")]
            if min(values) < 0:
                raise ValueError("parts")
            parts.append(PartLayout(*values))
        return cls(
            stamp,
            tuple(parts),
            _field(data, "rotation", bool),
            _field(data, "payload_bytes", int),
            _field(data, "xxh3_structure", int),
            _field(data, "xxh3_vectors", int),
            _field(data, "library", str),
        )


def _field(data: dict[str, Any], key: str, kind: type) -> Any:
    value = data[key]
    # bool is an int in Python: keep it out of int fields, and ints out of bool ones
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(key)
    return value


@dataclass(frozen=True)
class Trailer:
    """A parsed trailer, and the bytes it takes at the end of the file."""

    header: AnnHeader
    trailer_bytes: int

    @property
    def file_bytes(self) -> int:
        return self.header.payload_bytes + self.trailer_bytes


def read_trailer(path: Path, f: IO[bytes]) -> Trailer:
    """The header of the file open as ``f`` (``path`` names it in errors)."""
    head = f.read(len(MAGIC))
    if head[:6] == MAGIC[:6]:  # 01 and 02 began with their magic
        raise IndexStoreError(f"ANN file {path} has an older format (bad magic)")
    size = f.seek(0, os.SEEK_END)
    if size < len(MAGIC) + _LENGTH.size:
        raise IndexStoreError(f"ANN file {path} is {'empty' if not size else 'truncated'}")
    f.seek(size - len(MAGIC) - _LENGTH.size)
    tail = f.read(len(MAGIC) + _LENGTH.size)
    if tail[_LENGTH.size :] in OLDER_MAGICS:
        raise IndexStoreError(f"ANN file {path} has an older format (bad magic)")
    if tail[_LENGTH.size :] != MAGIC:
        raise IndexStoreError(f"ANN file {path} is not a distilmarco ANN file (bad magic)")
    (length,) = _LENGTH.unpack_from(tail)
    if length > size - len(MAGIC) - _LENGTH.size:
        raise IndexStoreError(f"ANN file {path} is truncated inside its header")
    f.seek(size - len(MAGIC) - _LENGTH.size - length)
    try:
        header = AnnHeader.from_json(json.loads(f.read(length)))
    except (ValueError, KeyError, TypeError) as exc:
        raise IndexStoreError(f"ANN file {path} has a damaged header ({exc})") from exc
    return Trailer(header, length + _LENGTH.size + len(MAGIC))


def trailer_bytes(header: AnnHeader) -> bytes:
    """What follows the payload in a file with this header."""
    raw = header.to_bytes()
    return raw + _LENGTH.pack(len(raw)) + MAGIC


def read_stamp(path: Path) -> AnnStamp:
    """The stamp in a file's trailer, with the file's length checked but not its checksums."""
    try:
        with open(path, "rb") as f:
            trailer = read_trailer(path, f)
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError as exc:
        raise IndexStoreError(f"ANN file {path} is missing") from exc
    except OSError as exc:  # e.g. a folder in its place
        raise IndexStoreError(f"ANN file {path} cannot be read: {exc}") from exc
    if size != trailer.file_bytes:
        raise IndexStoreError(f"ANN file {path} has the wrong length (truncated or extended)")
    return trailer.header.stamp
