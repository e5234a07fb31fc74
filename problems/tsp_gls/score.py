"""Host side of tsp_gls: check the candidate's matrices and the GLS tours, score the gaps.

Never executes candidate code. Instances, distances, tour checks and the gap summary
are tsp's (``problems/tsp/score.py``, loaded by path: the two problems must measure
tours the same way). What is added here:

* the split spec carries the search budget, ``gls: {iterations, alpha, max_moves}``,
  which every instance takes to the harness (a fixed budget, no wall clock);
* each raw output also holds the matrix the candidate returned; it must be an
  n x n array of finite real numbers (ints or floats), or the whole output is invalid;
* the feature ``distance_correlation``: Pearson correlation of that matrix with the
  distances, off the diagonal, averaged over instances (the classic-GLS seed is 1.0).

Score = -(mean optimality gap in %), averaged per group (instance size) first.
"""

from __future__ import annotations

import base64
import binascii
import importlib.util
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from evoengine.evaluation.scoring import InvalidOutput, ScoreResult

GLS_KEYS = ("iterations", "alpha", "max_moves")


def _load_tsp_score() -> ModuleType:
    path = Path(__file__).resolve().parent.parent / "tsp" / "score.py"
    spec = importlib.util.spec_from_file_location("evoengine_problem_tsp_gls_tsp_score", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"tsp_gls needs the tsp problem's scorer at {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tsp = _load_tsp_score()


def load_instances(split: str, spec: Mapping[str, Any], data_dir: Path) -> list[dict]:
    """tsp's instances, each carrying the split's GLS budget under ``gls``."""
    gls = dict(spec.get("gls") or {})
    missing = [key for key in GLS_KEYS if key not in gls]
    if missing:
        raise ValueError(f"tsp_gls split {split!r}: spec.gls lacks {', '.join(missing)}")
    budget = {"iterations": int(gls["iterations"]), "alpha": float(gls["alpha"]),
              "max_moves": int(gls["max_moves"])}
    if budget["iterations"] < 0 or budget["alpha"] <= 0 or budget["max_moves"] < 1:
        raise ValueError(f"tsp_gls split {split!r}: spec.gls needs iterations >= 0, "
                         "alpha > 0 and max_moves >= 1")
    sources = {key: value for key, value in spec.items() if key != "gls"}
    instances = tsp.load_instances(split, sources, data_dir)
    for inst in instances:
        inst["gls"] = dict(budget)
    return instances


def decode_matrix(encoded: object, instance: Mapping[str, Any]) -> np.ndarray:
    """The candidate's matrix as float64 n x n, or InvalidOutput saying what is wrong."""
    name, n = instance["name"], len(instance["coords"])
    if not isinstance(encoded, dict):
        raise InvalidOutput(f"{name}: heuristics output is {type(encoded).__name__}, "
                            "not an encoded matrix")
    shape, dtype = encoded.get("shape"), encoded.get("dtype")
    if shape != [n, n]:
        raise InvalidOutput(f"{name}: heuristics() returned shape {shape!r} "
                            f"(dtype {str(dtype)[:40]}); it must be ({n}, {n})")
    try:  # a real dtype string is short ("<f8"); a long one could take seconds to parse
        kind = np.dtype(dtype).kind if isinstance(dtype, str) and len(dtype) <= 32 else "?"
    except (TypeError, ValueError):
        kind = "?"
    if kind not in "iuf":
        raise InvalidOutput(f"{name}: heuristics() returned dtype {str(dtype)[:40]}; "
                            "it must hold real numbers (ints or floats)")
    data = encoded.get("data")
    if not isinstance(data, str):
        raise InvalidOutput(f"{name}: heuristics matrix has no data")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidOutput(f"{name}: heuristics matrix data is not base64") from exc
    if len(raw) != 8 * n * n:
        raise InvalidOutput(f"{name}: heuristics matrix holds {len(raw)} bytes, "
                            f"expected {8 * n * n}")
    matrix = np.frombuffer(raw, dtype="<f8").reshape(n, n)
    if not np.isfinite(matrix).all():
        bad = np.argwhere(~np.isfinite(matrix))[0]
        raise InvalidOutput(f"{name}: heuristics() returned {matrix[tuple(bad)]} at "
                            f"[{bad[0]}, {bad[1]}]; every entry must be finite")
    return matrix


def distance_correlation(matrix: np.ndarray, coords: list) -> float:
    """Pearson correlation of ``matrix`` with the distances, off the diagonal (0 if flat)."""
    points = np.asarray(coords, dtype=float)
    distances = tsp.euc_2d(points[:, None, :], points[None, :, :])
    off = ~np.eye(len(points), dtype=bool)
    x, y = matrix[off], distances[off]
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    with np.errstate(over="ignore", invalid="ignore"):
        x = (x - x.mean()) / x.std()
        y = (y - y.mean()) / y.std()
        value = float(np.mean(x * y))
    return value if np.isfinite(value) else 0.0


def score(outputs: object, instances: list) -> ScoreResult:
    """Validate every matrix and tour; score the tours as -(mean optimality gap in %)."""
    if not isinstance(outputs, list):
        raise InvalidOutput(f"output is {type(outputs).__name__}, not a list of results")
    if len(outputs) != len(instances):
        raise InvalidOutput(f"{len(outputs)} results for {len(instances)} instances")
    gaps, correlations = [], []
    for output, inst in zip(outputs, instances, strict=True):
        if not isinstance(output, dict) or set(output) != {"tour", "heuristics"}:
            raise InvalidOutput(f"{inst['name']}: result must be a dict with tour and "
                                "heuristics")
        matrix = decode_matrix(output["heuristics"], inst)
        if output["tour"] is None:
            raise InvalidOutput(f"{inst['name']}: no tour although the matrix is valid")
        nodes = tsp.check_tour(output["tour"], inst)
        gaps.append(tsp.gap_pct(tsp.tour_length(nodes, inst["coords"]), inst["optimum"]))
        correlations.append(distance_correlation(matrix, inst["coords"]))
    mean_gap, metrics, feedback = tsp.gap_summary(gaps, instances)
    correlation = float(np.mean(correlations))
    metrics["distance_correlation"] = correlation
    feedback += f"; the matrix correlates {correlation:.2f} with the distances"
    return ScoreResult(score=-mean_gap, metrics=metrics,
                       features={"distance_correlation": correlation}, feedback=feedback)
