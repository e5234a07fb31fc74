"""Sandbox side of tsp_gls: guided local search steered by the candidate's ``heuristics``.

Per instance the candidate is called once, ``heuristics(distance_matrix)``, and returns
an n x n matrix saying how bad each edge is to have in a tour. Guided local search
(Voudouris and Tsang) then runs a fixed number of iterations, never a wall-clock
budget, so the same candidate always gives the same tours:

1. start from the nearest-neighbour tour from node 0 and descend to a local optimum
   of the true distances;
2. each iteration, penalise the edge of the current tour with the highest utility
   ``h(i, j) / (1 + penalty(i, j))`` (``h`` symmetrised; the first one on ties), then
   descend again on the augmented cost ``d + lambda * penalty`` with
   ``lambda = alpha * (length of the first local optimum) / n``; the shortest tour
   met under the true distances is kept;
3. finally that tour descends once more under the true distances.

A descent applies the best improving move of two neighbourhoods, 2-opt and relocate
(move one node elsewhere), each scored in one vectorised numpy pass over all pairs,
until no move improves or ``max_moves`` moves were made.

Raw outputs go back to ``score.py``: the tour and the matrix the candidate returned
(float64 bytes in base64, with its shape and dtype), which the host validates itself.
Only ``numpy`` and the standard library are imported here.
"""

from __future__ import annotations

import base64
from types import ModuleType
from typing import Any

import numpy as np

IMPROVEMENT = 1e-7  # a move must shorten the (augmented) tour by more than this


def distance_matrix(coords: list) -> np.ndarray:
    """The n x n EUC_2D matrix: nint of the Euclidean distance, as float64."""
    points = np.asarray(coords, dtype=float)
    diff = points[:, None, :] - points[None, :, :]
    return np.floor(np.sqrt((diff ** 2).sum(axis=-1)) + 0.5)


def nearest_neighbour(distances: np.ndarray) -> np.ndarray:
    n = len(distances)
    tour = [0]
    unvisited = np.ones(n, dtype=bool)
    unvisited[0] = False
    for _ in range(n - 1):
        row = np.where(unvisited, distances[tour[-1]], np.inf)
        tour.append(int(np.argmin(row)))
        unvisited[tour[-1]] = False
    return np.asarray(tour, dtype=np.int64)


def tour_cost(cost: np.ndarray, tour: np.ndarray) -> float:
    return float(cost[tour, np.roll(tour, -1)].sum())


class Neighbourhoods:
    """Best 2-opt and relocate moves of a tour of ``n`` nodes under a symmetric cost."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.next = np.roll(np.arange(n), -1)
        self.prev = np.roll(np.arange(n), 1)
        # 2-opt on positions i < j: edges (i, i+1) and (j, j+1) become (i, j), (i+1, j+1);
        # j = i + 1 changes nothing, and (0, n-1) removes two edges that share node 0.
        # Masks are added (0 or +inf), which is much faster than boolean assignment.
        two_opt_invalid = ~np.triu(np.ones((n, n), dtype=bool), k=2)
        two_opt_invalid[0, n - 1] = True
        # relocate node at position i into edge (j, j+1): not into its own two edges.
        relocate_invalid = np.eye(n, dtype=bool) | np.eye(n, k=-1, dtype=bool)
        relocate_invalid[0, n - 1] = True
        self.two_opt_mask = np.where(two_opt_invalid, np.inf, 0.0)
        self.relocate_mask = np.where(relocate_invalid, np.inf, 0.0)

    def best_move(self, cost: np.ndarray, tour: np.ndarray) -> tuple[float, str, int, int]:
        """(delta, kind, i, j) of the best move; delta >= 0 means none improves."""
        a = cost[np.ix_(tour, tour)]  # a[i, j]: cost between the nodes at positions i, j
        a_next = np.concatenate((a[:, 1:], a[:, :1]), axis=1)  # a[i, j+1]
        edge = a_next.diagonal().copy()  # edge[i]: cost of (i, i+1)
        two_opt = np.concatenate((a_next[1:], a_next[:1]))  # a[i+1, j+1]
        two_opt += a
        two_opt -= edge[:, None]
        two_opt -= edge
        two_opt += self.two_opt_mask
        removal_gain = a[np.arange(self.n), self.prev] + edge - a[self.prev, self.next]
        relocate = a_next
        relocate += a
        relocate -= edge
        relocate -= removal_gain[:, None]
        relocate += self.relocate_mask
        k2, kr = int(np.argmin(two_opt)), int(np.argmin(relocate))
        if two_opt.flat[k2] <= relocate.flat[kr]:
            return float(two_opt.flat[k2]), "2opt", *divmod(k2, self.n)
        return float(relocate.flat[kr]), "relocate", *divmod(kr, self.n)

    def descend(self, cost: np.ndarray, tour: np.ndarray, max_moves: int) -> np.ndarray:
        """Apply best improving moves until none is left or ``max_moves`` were made."""
        tour = tour.copy()
        for _ in range(max_moves):
            delta, kind, i, j = self.best_move(cost, tour)
            if delta >= -IMPROVEMENT:
                break
            if kind == "2opt":
                tour[i + 1:j + 1] = tour[i + 1:j + 1][::-1].copy()
            else:
                node, after = tour[i], tour[j]
                rest = np.delete(tour, i)
                at = int(np.flatnonzero(rest == after)[0]) + 1
                tour = np.insert(rest, at, node)
        return tour


def guided_local_search(distances: np.ndarray, guide: np.ndarray, iterations: int,
                        alpha: float, max_moves: int) -> np.ndarray:
    """The tour GLS finds in ``iterations`` penalty rounds guided by ``guide``."""
    n = len(distances)
    tour = nearest_neighbour(distances)
    if n < 5:
        return tour
    moves = Neighbourhoods(n)
    tour = moves.descend(distances, tour, max_moves)
    best, best_length = tour, tour_cost(distances, tour)
    weight = alpha * best_length / n
    badness = (guide + guide.T) / 2.0
    penalties = np.zeros((n, n))
    augmented = distances.copy()
    for _ in range(iterations):
        ends = np.roll(tour, -1)
        utility = badness[tour, ends] / (1.0 + penalties[tour, ends])
        k = int(np.argmax(utility))
        a, b = tour[k], ends[k]
        penalties[a, b] += 1.0
        penalties[b, a] += 1.0
        augmented[a, b] = augmented[b, a] = distances[a, b] + weight * penalties[a, b]
        tour = moves.descend(augmented, tour, max_moves)
        length = tour_cost(distances, tour)
        if length < best_length:
            best, best_length = tour, length
    return moves.descend(distances, best, max_moves)


def encode_matrix(value: Any, n: int) -> dict:
    """The candidate's matrix for the host: shape, dtype, and float64 bytes if numeric
    and n x n (a matrix of another shape is rejected on its shape alone)."""
    try:
        array = np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        return {"shape": None, "dtype": f"unconvertible ({type(exc).__name__})"}
    encoded: dict[str, Any] = {"shape": list(array.shape), "dtype": array.dtype.str}
    if array.dtype.kind in "iuf" and array.shape == (n, n):
        encoded["data"] = base64.b64encode(array.astype("<f8").tobytes()).decode("ascii")
    return encoded


def _usable(value: Any, n: int) -> np.ndarray | None:
    """The matrix as float64 when it is n x n, real-valued and finite; else None."""
    try:
        array = np.asarray(value)
    except Exception:
        return None
    if array.shape != (n, n) or array.dtype.kind not in "iuf":
        return None
    array = array.astype(float)
    return array if np.isfinite(array).all() else None


def run(candidate: ModuleType, instances: list[dict]) -> list[dict]:
    """Per instance: ``{"tour": [...] or None, "heuristics": encoded matrix}``.

    ``tour`` is None when the matrix is unusable; the host then rejects the matrix.
    """
    heuristics = getattr(candidate, "heuristics", None)
    if not callable(heuristics):
        raise ValueError("the candidate does not define a function heuristics(distance_matrix)")
    outputs = []
    for inst in instances:
        distances = distance_matrix(inst["coords"])
        value = heuristics(distances.copy())
        guide = _usable(value, len(distances))
        tour = None
        if guide is not None:
            gls = inst["gls"]
            tour = guided_local_search(distances, guide, int(gls["iterations"]),
                                       float(gls["alpha"]), int(gls["max_moves"])).tolist()
        outputs.append({"tour": tour, "heuristics": encode_matrix(value, len(distances))})
    return outputs
