"""Sandbox side of bin_packing: pack items online with the candidate's ``priority``.

Runs inside the sandbox next to untrusted code, so it returns only raw bin
assignments; ``score.py`` checks and scores them on the host. The packing loop
is FunSearch's: one bin per item is pre-allocated at full capacity, every item is
offered to the bins it fits in (opened or not), and goes to the argmax of the
priorities (the lowest index on ties). Only ``numpy`` is imported here because
the sandbox image need not have the engine installed.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import numpy as np


def _pack(priority: Any, capacity: float, items: list) -> list[int]:
    """Pack ``items`` online; return the bin index chosen for each item.

    The loop runs once per item, so it calls array methods rather than the ``np.*``
    wrappers around them and checks the winner with ``math.isfinite``: the same
    choices, about a third less time (every evaluation is mostly this loop)."""
    bins = np.full(len(items), capacity, dtype=float)
    chosen: list[int] = []
    for i, item in enumerate(items):
        # bins >= item is exactly FunSearch's (bins - item) >= 0 for finite floats.
        valid = (bins >= item).nonzero()[0]
        priorities = np.asarray(priority(item, bins[valid]))
        if priorities.shape != valid.shape:
            raise ValueError(
                f"priority() returned shape {priorities.shape} for {valid.size} bins; "
                f"it must return one number per bin, shape ({valid.size},)")
        kind = priorities.dtype.kind
        if kind not in "biuf":
            raise ValueError(f"priority() returned dtype {priorities.dtype}; "
                             "it must return real numbers")
        best = int(priorities.argmax())
        # argmax stops at the first NaN, so checking the chosen entry finds any NaN; a
        # winning +inf (or all -inf) would turn the choice into a tie-break, so the
        # winner must be finite. -inf may still mark bins to avoid.
        if kind == "f" and not _finite(priorities[best]):
            raise ValueError(f"priority() chose a bin with priority {priorities[best]} for "
                             f"item {i} (size {item}); the highest priority must be finite")
        bin_index = int(valid[best])
        bins[bin_index] -= item
        chosen.append(bin_index)
    return chosen


def _finite(value: Any) -> bool:
    """np.isfinite of one float scalar; math.isfinite is exact up to float64 and much
    cheaper on a scalar (a longdouble may exceed float64's range)."""
    return math.isfinite(value) if value.itemsize <= 8 else bool(np.isfinite(value))


def run(candidate: ModuleType, instances: list[dict]) -> list[list[int]]:
    """Return, for each instance ``{capacity, items}``, the bin index of every item."""
    priority = getattr(candidate, "priority", None)
    if not callable(priority):
        raise ValueError("the candidate does not define a function priority(item, bins)")
    return [_pack(priority, inst["capacity"], inst["items"]) for inst in instances]
