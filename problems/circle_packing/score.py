"""Host side of circle_packing: check packings exactly, score the sum of radii.

Never executes candidate code. A packing is valid only if it has exactly ``n``
circles given as finite real numbers (Python ``int`` or ``float``; bools, strings,
NaN and infinities are rejected), every radius is > 0, every circle lies inside the
unit square (``x - r >= 0``, ``x + r <= 1``, the same for ``y``) and no two overlap
(``(xi - xj)^2 + (yi - yj)^2 >= (ri + rj)^2``). There is no tolerance: touching exactly
is allowed, overlapping or leaving the square by any amount is not. The comparisons
are exact, in rational arithmetic on the floats' values (``fractions.Fraction``),
because float sums round: 0.125 + nextafter(0.125, 1) is 0.25 in floats, which would
let two circles overlap by 3e-17 unnoticed. Pairs clearly apart in floats (by a
relative 1e-9, far above rounding) skip the exact test.

A split is ``{instances: [{n, alphaevolve?, best_known?}, ...]}``. The score of a
split is the mean over its instances of ``sum(radii) * sqrt(26 / n)``: the sum of
radii itself for n = 26 (the benchmark), and for other n its "26-equivalent" (the
best sum of radii grows about like sqrt(n)), so that validation scores on other n
stand on the same scale as the train score and their gap means something.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

from evoengine.evaluation.scoring import InvalidOutput, ScoreResult

BENCHMARK_N = 26
_CLEARLY_APART = 1.0 + 1e-9  # float margin beyond any rounding of d^2 and (ri + rj)^2


def load_instances(split: str, spec: Mapping[str, Any], data_dir: Path) -> list[dict]:
    """The instances of ``split``: ``{name, n}`` plus the reference sums if known."""
    instances = []
    for entry in spec.get("instances", []):
        n = int(entry["n"])
        if n < 1:
            raise ValueError(f"circle_packing split {split!r}: n must be >= 1, got {n}")
        instance = {"name": f"n{n}", "n": n}
        for key in ("alphaevolve", "best_known"):
            if entry.get(key) is not None:
                instance[key] = float(entry[key])
        instances.append(instance)
    if not instances:
        raise ValueError(f"circle_packing split {split!r} lists no instances")
    return instances


def _number(value: object, what: str) -> float:
    # type() rather than isinstance(): bool is an int, and must not pass as one.
    if type(value) not in (int, float):
        raise InvalidOutput(f"{what} is {type(value).__name__} ({repr(value)[:40]}), "
                            "not a number")
    try:
        number = float(value)  # an int too large for a float raises OverflowError
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise InvalidOutput(f"{what} is {repr(value)[:40]}, not a finite number")
    return number


def check_packing(output: object, n: int, name: str) -> tuple[list[tuple[float, float]],
                                                              list[float]]:
    """The centres and radii of a valid packing of ``n`` circles, or InvalidOutput."""
    if not isinstance(output, dict) or set(output) != {"centers", "radii"}:
        raise InvalidOutput(f"{name}: expected centers and radii")
    centers, radii = output["centers"], output["radii"]
    if not isinstance(centers, list) or len(centers) != n:
        size = len(centers) if isinstance(centers, list) else type(centers).__name__
        raise InvalidOutput(f"{name}: centers must be {n} points (shape ({n}, 2)), got {size}")
    if not isinstance(radii, list) or len(radii) != n:
        size = len(radii) if isinstance(radii, list) else type(radii).__name__
        raise InvalidOutput(f"{name}: radii must be {n} numbers (shape ({n},)), got {size}")
    points = []
    for i, point in enumerate(centers):
        if not isinstance(point, list) or len(point) != 2:
            raise InvalidOutput(f"{name}: center {i} is not an (x, y) pair")
        points.append((_number(point[0], f"{name}: center {i} x"),
                       _number(point[1], f"{name}: center {i} y")))
    sizes = [_number(r, f"{name}: radius {i}") for i, r in enumerate(radii)]
    for i, ((x, y), r) in enumerate(zip(points, sizes, strict=True)):
        if r <= 0:
            raise InvalidOutput(f"{name}: radius {i} is {r!r}; radii must be > 0")
        # x >= r is exact in floats; x + r <= 1 is not (the sum rounds), so in rationals.
        if x < r or y < r or Fraction(x) + Fraction(r) > 1 or Fraction(y) + Fraction(r) > 1:
            raise InvalidOutput(f"{name}: circle {i} (center ({x:.6g}, {y:.6g}), radius "
                                f"{r:.6g}) leaves the unit square")
    for i in range(n):
        (xi, yi), ri = points[i], sizes[i]
        for j in range(i + 1, n):
            (xj, yj), rj = points[j], sizes[j]
            if _overlap(xi, yi, ri, xj, yj, rj):
                gap = ri + rj - math.hypot(xi - xj, yi - yj)
                raise InvalidOutput(f"{name}: circles {i} and {j} overlap (by about "
                                    f"{max(gap, 0.0):.3g})")
    return points, sizes


def _overlap(xi: float, yi: float, ri: float, xj: float, yj: float, rj: float) -> bool:
    """True unless the circles are disjoint or touch, decided exactly."""
    dx, dy, reach = xi - xj, yi - yj, ri + rj
    if dx * dx + dy * dy > reach * reach * _CLEARLY_APART:
        return False
    dx_q, dy_q = Fraction(xi) - Fraction(xj), Fraction(yi) - Fraction(yj)
    reach_q = Fraction(ri) + Fraction(rj)
    return dx_q * dx_q + dy_q * dy_q < reach_q * reach_q


def score(outputs: object, instances: list) -> ScoreResult:
    """Validate every packing; score the mean 26-equivalent sum of radii."""
    if not isinstance(outputs, list) or len(outputs) != len(instances):
        raise InvalidOutput(f"expected {len(instances)} packings, got "
                            f"{len(outputs) if isinstance(outputs, list) else outputs!r:.40}")
    metrics: dict[str, float] = {}
    scaled, spreads, notes = [], [], []
    for output, instance in zip(outputs, instances, strict=True):
        n = instance["n"]
        _, radii = check_packing(output, n, instance["name"])
        total = math.fsum(radii)
        mean = total / n
        spreads.append(math.sqrt(math.fsum((r - mean) ** 2 for r in radii) / n) / mean)
        scaled.append(total * math.sqrt(BENCHMARK_N / n))
        metrics[f"sum_radii_n{n}"] = total
        note = f"n={n}: sum of radii {total:.6f}"
        for key, label in (("alphaevolve", "AlphaEvolve"), ("best_known", "best known")):
            if key in instance:
                metrics[f"ratio_to_{key}_n{n}" if len(instances) > 1 else f"ratio_to_{key}"] \
                    = total / instance[key]
                note += f", {total / instance[key]:.2%} of {label} {instance[key]:g}"
        notes.append(note + f", smallest radius {min(radii):.4f}")
    features = {"radius_cv": sum(spreads) / len(spreads)}
    return ScoreResult(score=sum(scaled) / len(scaled), metrics=metrics, features=features,
                       feedback="; ".join(notes))
