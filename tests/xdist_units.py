"""How ``make test`` spreads the suite over pytest-xdist workers (``--dist loadgroup``).

A unit of work is an ``xdist_group`` (tests sharing a heavy session fixture or export) or else a
whole test module, so module-scoped fixtures are built once, on one worker, instead of once per
worker that happens to run one of the module's tests. Units start heaviest first (the slow tests
they hold), so the last unit to finish is a short one and both workers end together.
"""

from __future__ import annotations

from collections import Counter

import pytest
from xdist.scheduler import LoadGroupScheduling

# Relative cost of a test for the start order: a test marked slow takes seconds to minutes, the
# others a fraction of a second; only the order of the sums matters.
SLOW_WEIGHT = 40
FAST_WEIGHT = 1


def groups_of(item: pytest.Item) -> list[str]:
    marks = item.iter_markers("xdist_group")
    return sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default")) for m in marks})


def mark_groups(items: list[pytest.Item]) -> None:
    """Give grouped tests the ``nodeid@group`` id that loadgroup schedules by, where xdist could
    not: it writes ``item._nodeid``, which pytest 9.2 no longer reads (it keeps the id in
    ``item._id``), so every group was silently split across the workers."""
    for item in items:
        groups = groups_of(item)
        suffix = "@" + "_".join(groups)
        if not groups or item.nodeid.endswith(suffix):
            continue
        from _pytest.nodeid import NodeId

        item._id = NodeId.parse(item.nodeid + suffix)  # type: ignore[attr-defined]


def unit_of(nodeid: str) -> str:
    """The group after the last ``@`` (outside a parameter id), else the module's path."""
    if nodeid.rfind("@") > nodeid.rfind("]"):
        return nodeid.rsplit("@", 1)[1]
    return nodeid.split("::", 1)[0]


def heaviest_units_first(items: list[pytest.Item]) -> None:
    """Reorder ``items`` in place: units by descending weight, each unit's tests together and in
    their collected order. Every worker sorts the same collection the same way, as xdist needs."""
    weight: Counter[str] = Counter()
    first: dict[str, int] = {}
    for i, item in enumerate(items):
        unit = unit_of(item.nodeid)
        weight[unit] += SLOW_WEIGHT if item.get_closest_marker("slow") else FAST_WEIGHT
        first.setdefault(unit, i)
    position = {id(item): i for i, item in enumerate(items)}
    items.sort(
        key=lambda it: (-weight[unit_of(it.nodeid)], first[unit_of(it.nodeid)], position[id(it)])
    )


class GroupOrModuleScheduling(LoadGroupScheduling):
    """loadgroup with a whole module as the unit for tests outside any group, handed out in the
    workers' collection order (which :func:`heaviest_units_first` set) rather than by size."""

    def __init__(self, config: pytest.Config, log: object = None) -> None:
        super().__init__(config, log)  # type: ignore[arg-type]
        config.option.loadscopereorder = False

    def _split_scope(self, nodeid: str) -> str:
        return unit_of(nodeid)
