"""Sandbox side of circle_packing: call the candidate's ``construct_packing(n)``.

Returns only the raw centres and radii of each instance; ``score.py`` checks them
strictly on the host. Only ``numpy`` may be imported here: the sandbox image need
not have the engine installed.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np


def _plain(value: Any) -> Any:
    """numpy arrays and scalars as lists and Python numbers; the rest unchanged
    (``score.py`` rejects anything that is not a list of numbers)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def run(candidate: ModuleType, instances: list[dict]) -> list[dict]:
    """For each instance ``{n}``: ``{"centers": [[x, y], ...], "radii": [r, ...]}``."""
    construct = getattr(candidate, "construct_packing", None)
    if not callable(construct):
        raise ValueError("the candidate does not define construct_packing(n)")
    outputs = []
    for instance in instances:
        result = construct(instance["n"])
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            raise ValueError(f"construct_packing({instance['n']}) returned "
                             f"{type(result).__name__}; it must return (centers, radii)")
        centers, radii = result
        outputs.append({"centers": _plain(centers), "radii": _plain(radii)})
    return outputs
