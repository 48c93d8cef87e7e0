"""CPU facts that backends need: how many threads to use by default."""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


@functools.cache
def physical_cores() -> int:
    """Physical cores this process may run on (SMT siblings counted once); at least 1.

    Reads Linux's CPU topology for the CPUs in our affinity mask; elsewhere falls back to the
    logical count. Matrix kernels gain nothing from SMT siblings and lose to their contention.
    """
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)
    cores: set[tuple[str, str]] = set()
    for cpu in allowed:
        topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            package = (topo / "physical_package_id").read_text().strip()
            core = (topo / "core_id").read_text().strip()
        except OSError:
            return max(1, len(allowed))
        cores.add((package, core))
    return max(1, len(cores))


def default_threads() -> int:
    """Intra-op threads when the caller does not choose: one per physical core."""
    return physical_cores()
