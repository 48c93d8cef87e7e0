"""What the ANN cache reports about itself: its file as seen on disk, and its last load."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class AnnEvent(enum.Enum):
    """How the in-memory ANN cache last came to be."""

    NOT_LOADED = "not loaded"
    LOADED = "loaded"  # read from its file, then caught up with the store
    REBUILT = "rebuilt"  # built from the store: the file was missing, damaged, foreign or stale


@dataclass(frozen=True)
class AnnFileStats:
    """What the ANN file on disk says about itself (for ``Index.stats``), without trusting it.

    Fields that do not apply are None: ``error`` only when the file is present but unreadable;
    ``seq``, ``vectors`` and ``stale_by`` (store sequence minus the file's) when it is readable."""

    file: str | None = None
    present: bool = False
    valid: bool | None = None
    error: str | None = None
    seq: int | None = None
    vectors: int | None = None
    stale_by: int | None = None

    def to_json(self) -> dict[str, object]:
        """The fields that apply, for JSON output."""
        return {k: v for k, v in self.__dict__.items() if v is not None}
