"""Sandbox side of tsp: build a tour greedily with the candidate's ``select_next_node``.

The tour starts at node 0; the candidate picks each next node among the unvisited ones
until none is left, and the tour closes back to node 0. Only raw tours come back;
``score.py`` checks them and measures their length on the host. Distances are TSPLIB's
EUC_2D (nint of the Euclidean distance), as floats. Only ``numpy`` is imported here
because the sandbox image need not have the engine installed.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np


def distance_matrix(coords: list) -> np.ndarray:
    """The n x n EUC_2D matrix: nint of the Euclidean distance, as float64."""
    points = np.asarray(coords, dtype=float)
    diff = points[:, None, :] - points[None, :, :]
    return np.floor(np.sqrt((diff ** 2).sum(axis=-1)) + 0.5)


def _as_node(choice: Any, unvisited: np.ndarray, step: int) -> int:
    """The chosen node as an int, or a ValueError saying what was wrong with it."""
    if isinstance(choice, np.ndarray) and choice.size == 1:
        choice = choice.reshape(())[()]
    if isinstance(choice, (bool, np.bool_)) or not isinstance(choice, (int, np.integer)):
        raise ValueError(f"select_next_node() returned {repr(choice)[:60]} "
                         f"({type(choice).__name__}) at step {step}; it must return "
                         "one node index (an int) from unvisited_nodes")
    node = int(choice)
    position = np.searchsorted(unvisited, node)
    if position >= unvisited.size or unvisited[position] != node:
        raise ValueError(f"select_next_node() returned node {node} at step {step}, "
                         "which is not in unvisited_nodes")
    return node


def _construct(select_next_node: Any, coords: list) -> list[int]:
    distances = distance_matrix(coords)
    n = len(distances)
    start = 0
    tour = [start]
    unvisited = np.arange(1, n)
    while unvisited.size:
        view = distances.view()
        view.flags.writeable = False  # a slip in the candidate cannot corrupt the next step
        node = _as_node(select_next_node(tour[-1], start, unvisited.copy(), view),
                        unvisited, len(tour))
        tour.append(node)
        unvisited = unvisited[unvisited != node]
    return tour


def run(candidate: ModuleType, instances: list[dict]) -> list[list[int]]:
    """Return one tour (a list of node indices starting at 0) per instance."""
    select_next_node = getattr(candidate, "select_next_node", None)
    if not callable(select_next_node):
        raise ValueError("the candidate does not define a function select_next_node("
                         "current_node, destination_node, unvisited_nodes, distance_matrix)")
    return [_construct(select_next_node, inst["coords"]) for inst in instances]
