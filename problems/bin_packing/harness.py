"""Sandbox side of bin_packing: pack items online with the candidate's ``priority``.

Runs inside the sandbox next to untrusted code, so it returns only raw bin
assignments; ``score.py`` checks and scores them on the host. The packing loop
is FunSearch's: one bin per item is pre-allocated at full capacity, every item is
offered to the bins it fits in (opened or not), and goes to the argmax of the
priorities (the lowest index on ties). Only ``numpy`` is imported here because
the sandbox image need not have the engine installed.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np


def _pack(priority: Any, capacity: float, items: list) -> list[int]:
    """Pack ``items`` online; return the bin index chosen for each item."""
    bins = np.full(len(items), capacity, dtype=float)
    chosen = np.empty(len(items), dtype=np.int64)
    for i, item in enumerate(items):
        # bins >= item is exactly FunSearch's (bins - item) >= 0 for finite floats.
        valid = np.flatnonzero(bins >= item)
        priorities = np.asarray(priority(item, bins[valid]))
        if priorities.shape != valid.shape:
            raise ValueError(
                f"priority() returned shape {priorities.shape} for {valid.size} bins; "
                f"it must return one number per bin, shape ({valid.size},)")
        if priorities.dtype.kind not in "biuf":
            raise ValueError(f"priority() returned dtype {priorities.dtype}; "
                             "it must return real numbers")
        best = int(np.argmax(priorities))
        # argmax stops at the first NaN, so checking the chosen entry finds any NaN; a
        # winning +inf (or all -inf) would turn the choice into a tie-break, so the
        # winner must be finite. -inf may still mark bins to avoid.
        if priorities.dtype.kind == "f" and not np.isfinite(priorities[best]):
            raise ValueError(f"priority() chose a bin with priority {priorities[best]} for "
                             f"item {i} (size {item}); the highest priority must be finite")
        bin_index = valid[best]
        bins[bin_index] -= item
        chosen[i] = bin_index
    return chosen.tolist()


def run(candidate: ModuleType, instances: list[dict]) -> list[list[int]]:
    """Return, for each instance ``{capacity, items}``, the bin index of every item."""
    priority = getattr(candidate, "priority", None)
    if not callable(priority):
        raise ValueError("the candidate does not define a function priority(item, bins)")
    return [_pack(priority, inst["capacity"], inst["items"]) for inst in instances]
