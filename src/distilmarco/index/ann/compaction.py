"""Compacting a graph part: rebuilding it from its live vectors once enough slots are tombstones.

Small parts are rebuilt at once, inside the removal that made them due; big ones on a thread of
their own, while searches and changes go on with the tombstones (slower searches, same answers).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from distilmarco.index.ann.native import background_threads
from distilmarco.index.ann.part import GraphPart

log = logging.getLogger(__name__)


class PartOwner(Protocol):
    """What a compaction needs from the ``AnnIndex`` whose part it rebuilds."""

    lock: threading.RLock

    def holds(self, part: GraphPart) -> bool: ...

    def replace_part(self, old: GraphPart, fresh: GraphPart) -> bool: ...


@dataclass(frozen=True)
class Snapshot:
    """A part's live slots as they were when the copy began."""

    slots: int  # slots the part had
    dead: np.ndarray  # its tombstones then
    keys: np.ndarray  # the live slots' chunk ids
    vectors: np.ndarray  # and their stored vectors


def compacted_now(part: GraphPart) -> GraphPart:
    """``part`` rebuilt from its live vectors (the caller holds the owner's lock)."""
    live = np.flatnonzero(~part.dead)
    return part.rebuilt(part.keys[live], part.vectors_of(live))


def compact_later(owner: PartOwner, part: GraphPart, batch: int) -> threading.Thread:
    """Start rebuilding ``part`` on a thread of its own, then swap the copy in, caught up with
    what changed in ``part`` meanwhile. The owner's lock is held only to copy the vectors out
    (``batch`` slots at a time) and for the swap."""

    def compact() -> None:
        try:
            snapshot = _copy_out(owner, part, batch)
            if snapshot is None:
                return
            fresh = part.rebuilt(snapshot.keys, snapshot.vectors, background_threads())
            with owner.lock:
                if not owner.holds(part):
                    return
                fresh.catch_up(part, snapshot.slots, snapshot.dead)
                owner.replace_part(part, fresh)
            log.info("ANN part compacted: %d live of %d slots", fresh.live, fresh.slots)
        except Exception:  # the part keeps its tombstones: slower searches, same answers
            log.exception("compacting an ANN graph part failed")

    thread = threading.Thread(target=compact, name="ann-compact", daemon=True)
    thread.start()
    return thread


def _copy_out(owner: PartOwner, part: GraphPart, batch: int) -> Snapshot | None:
    """The live vectors of ``part``, copied in batches; None if it left the owner meanwhile."""
    with owner.lock:
        slots, dead = part.slots, part.dead.copy()
        live = np.flatnonzero(~dead)
        keys = part.keys[live]
    vectors = np.empty((len(live), part.dimension), np.float32)
    for lo in range(0, len(live), batch):
        with owner.lock:  # an add may move the graph's arrays, a swap drop its memory
            if not owner.holds(part):
                return None
            vectors[lo : lo + batch] = part.vectors_of(live[lo : lo + batch])
    return Snapshot(slots, dead, keys, vectors)
