"""Host side of tsp: load instances, check tours strictly, score them by optimality gap.

Never executes candidate code. Every distance is TSPLIB's EUC_2D one, the Euclidean
distance rounded to the nearest integer (``nint``), on TSPLIB and uniform instances
alike, so a gap is measured against optima defined with that same rounding. The score
is minus the mean optimality gap in percent, ``100 * (length - optimum) / optimum``,
averaged per group first (so every group counts the same), higher is better.

A split ``spec`` is one source or ``{"sources": [source, ...]}``, where a source is

* ``{kind: uniform, file}``: a JSON file written by ``make_data.py``: points drawn
  uniformly from a square, with their reference optimal lengths (LKH-3 via elkai);
* ``{kind: tsplib, names: [...]}``: TSPLIB ``tsplib/<name>.tsp`` files with their
  optima from ``tsplib_optima.json`` (``names`` left out: every file there).

Any source may carry ``group``; otherwise uniform instances are grouped by size
(``n50``) and TSPLIB ones as ``tsplib``. ``tsp_gls`` reuses these loaders and checks.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from evoengine.evaluation.scoring import InvalidOutput, ScoreResult


def load_instances(split: str, spec: Mapping[str, Any], data_dir: Path) -> list[dict]:
    """Return the instances of ``split``: dicts with name, group, coords, optimum."""
    instances: list[dict] = []
    for source in spec.get("sources", [spec]):
        kind = source.get("kind")
        if kind == "uniform":
            loaded = load_uniform(data_file(data_dir, source["file"]))
        elif kind == "tsplib":
            loaded = load_tsplib(data_dir, source.get("names"))
        else:
            raise ValueError(f"tsp split {split!r}: unknown source kind {kind!r}; "
                             "use uniform or tsplib")
        if source.get("group") is not None:
            for inst in loaded:
                inst["group"] = str(source["group"])
        instances.extend(loaded)
    return instances


def data_file(data_dir: Path, name: str) -> Path:
    """Resolve ``name`` under the problem's ``data/`` (the problem folder also works)."""
    for path in (Path(data_dir) / name, Path(data_dir) / "data" / name):
        if path.is_file():
            return path
    raise FileNotFoundError(f"tsp data file {name!r} not found under {data_dir}")


def load_uniform(path: Path) -> list[dict]:
    """Instances from a ``make_data.py`` file: ``{"instances": [{name, coords, optimum}]}``."""
    instances = []
    for inst in json.loads(path.read_text())["instances"]:
        coords = [[float(x), float(y)] for x, y in inst["coords"]]
        instances.append({"name": str(inst["name"]), "group": f"n{len(coords)}",
                          "coords": coords, "optimum": int(inst["optimum"])})
    return instances


def load_tsplib(data_dir: Path, names: Sequence[str] | None) -> list[dict]:
    """TSPLIB EUC_2D instances, in the order of ``names`` (default: sorted file names)."""
    optima = json.loads(data_file(data_dir, "tsplib_optima.json").read_text())
    if names is None:
        names = sorted(optima)
    instances = []
    for name in names:
        if name not in optima:
            raise ValueError(f"tsplib_optima.json has no optimum for {name!r}")
        coords = parse_tsplib(data_file(data_dir, f"tsplib/{name}.tsp"))
        instances.append({"name": str(name), "group": "tsplib", "coords": coords,
                          "optimum": int(optima[name])})
    return instances


def parse_tsplib(path: Path) -> list[list[float]]:
    """Node coordinates of a TSPLIB file; only EUC_2D with a NODE_COORD_SECTION."""
    header: dict[str, str] = {}
    coords: list[list[float]] = []
    in_coords = False
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line == "EOF":
            continue
        if in_coords:
            _, x, y = line.split()
            coords.append([float(x), float(y)])
        elif line.startswith("NODE_COORD_SECTION"):
            in_coords = True
        else:
            key, _, value = line.partition(":")
            header[key.strip()] = value.strip()
    if header.get("EDGE_WEIGHT_TYPE") != "EUC_2D":
        raise ValueError(f"{path.name}: EDGE_WEIGHT_TYPE {header.get('EDGE_WEIGHT_TYPE')!r}; "
                         "only EUC_2D is supported")
    if int(header.get("DIMENSION", -1)) != len(coords):
        raise ValueError(f"{path.name}: DIMENSION {header.get('DIMENSION')} but "
                         f"{len(coords)} coordinate lines")
    return coords


def euc_2d(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """TSPLIB EUC_2D: nint of the Euclidean distance between rows of ``a`` and ``b``."""
    return np.floor(np.sqrt(((np.asarray(a) - np.asarray(b)) ** 2).sum(axis=-1)) + 0.5)


def tour_length(tour: np.ndarray, coords: np.ndarray) -> int:
    """Length of the closed tour (back to its first node) under EUC_2D."""
    points = np.asarray(coords, dtype=float)[tour]
    return int(euc_2d(points, np.roll(points, -1, axis=0)).sum())


def check_tour(tour: object, instance: Mapping[str, Any]) -> np.ndarray:
    """Return ``tour`` as an int array, or raise InvalidOutput naming the instance.

    A tour is a list of plain ints, a permutation of 0..n-1 (every node exactly once).
    """
    name, n = instance["name"], len(instance["coords"])
    if not isinstance(tour, list):
        raise InvalidOutput(f"{name}: tour is {type(tour).__name__}, not a list of nodes")
    if len(tour) != n:
        raise InvalidOutput(f"{name}: tour has {len(tour)} nodes, the instance has {n}")
    # type(x) is int rejects bool, float (NaN, inf), str and numpy scalars in one test.
    for x in tour:
        if type(x) is not int:
            raise InvalidOutput(f"{name}: node {repr(x)[:40]} is {type(x).__name__}, "
                                "not an int")
    if n and (min(tour) < 0 or max(tour) >= n):
        raise InvalidOutput(f"{name}: node out of range [0, {n}): min {str(min(tour))[:40]}, "
                            f"max {str(max(tour))[:40]}")
    nodes = np.asarray(tour, dtype=np.int64)
    counts = np.bincount(nodes, minlength=n)
    if (counts != 1).any():
        repeated, missing = int(np.argmax(counts)), int(np.argmin(counts))
        raise InvalidOutput(f"{name}: not a permutation: node {repeated} appears "
                            f"{counts[repeated]} times, node {missing} is missing")
    return nodes


def gap_pct(length: float, optimum: float) -> float:
    return 100.0 * (length - optimum) / optimum


def nearest_choice_share(tour: np.ndarray, coords: np.ndarray) -> float:
    """Share of steps where the tour went to the nearest node not yet visited.

    1.0 is nearest neighbour; how far below it a heuristic goes says how often it
    trades the nearest step for something else (a grid axis for MAP-Elites).
    """
    coords = np.asarray(coords, dtype=float)
    n = len(tour)
    if n < 3:
        return 1.0
    unvisited = np.ones(n, dtype=bool)
    unvisited[tour[0]] = False
    nearest_steps = 0
    for k in range(n - 2):  # the last step has a single choice
        current, chosen = tour[k], tour[k + 1]
        candidates = np.flatnonzero(unvisited)
        dist = euc_2d(coords[candidates], coords[current])
        nearest_steps += bool(euc_2d(coords[chosen], coords[current]) <= dist.min())
        unvisited[chosen] = False
    return nearest_steps / (n - 2)


def group_means(values: Sequence[float], instances: Sequence[Mapping[str, Any]]
                ) -> dict[str, float]:
    """Mean of ``values`` per instance group, in first-seen order."""
    groups: dict[str, list[float]] = {}
    for value, inst in zip(values, instances, strict=True):
        groups.setdefault(str(inst.get("group", "")), []).append(value)
    return {g: float(np.mean(v)) for g, v in groups.items()}


def gap_summary(gaps: Sequence[float], instances: Sequence[Mapping[str, Any]]
                ) -> tuple[float, dict[str, float], str]:
    """(mean gap over groups, metrics, feedback text) shared by tsp and tsp_gls."""
    by_group = group_means(gaps, instances)
    mean_gap = float(np.mean(list(by_group.values())))
    metrics = {"gap_pct": mean_gap}
    if len(by_group) > 1:
        metrics.update({f"gap_pct_{g}": v for g, v in by_group.items()})
    worst = int(np.argmax(gaps))
    best = int(np.argmin(gaps))
    feedback = f"tours are {mean_gap:.2f}% longer than optimal on average"
    if len(by_group) > 1:
        feedback += " (" + ", ".join(f"{g}: {v:.2f}%" for g, v in by_group.items()) + ")"
    feedback += (f"; worst instance {instances[worst]['name']} "
                 f"(n={len(instances[worst]['coords'])}, gap {gaps[worst]:.2f}%), "
                 f"best {instances[best]['name']} (gap {gaps[best]:.2f}%)")
    return mean_gap, metrics, feedback


def score(outputs: object, instances: list) -> ScoreResult:
    """Validate one tour per instance and score them as -(mean optimality gap in %)."""
    if not isinstance(outputs, list):
        raise InvalidOutput(f"output is {type(outputs).__name__}, not a list of tours")
    if len(outputs) != len(instances):
        raise InvalidOutput(f"{len(outputs)} tours for {len(instances)} instances")
    gaps, shares = [], []
    for tour, inst in zip(outputs, instances, strict=True):
        nodes = check_tour(tour, inst)
        gaps.append(gap_pct(tour_length(nodes, inst["coords"]), inst["optimum"]))
        shares.append(nearest_choice_share(nodes, inst["coords"]))
    mean_gap, metrics, feedback = gap_summary(gaps, instances)
    share = float(np.mean(shares))
    metrics["nearest_choice_share"] = share
    feedback += f"; {100 * share:.0f}% of steps go to the nearest unvisited node"
    return ScoreResult(score=-mean_gap, metrics=metrics,
                       features={"nearest_choice_share": share}, feedback=feedback)
