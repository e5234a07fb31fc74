"""Host side of bin_packing: load instances, check packings strictly, score them.

Never executes candidate code. The score is FunSearch's (Romera-Paredes et al.,
Nature 2024, Table 1): the percentage of bins used above the L1 lower bound,
``(mean bins - mean L1) / mean L1`` with ``L1 = ceil(sum(items) / capacity)``,
negated so that higher is better. Averaging bins and bounds before dividing
(rather than averaging per-instance ratios) is what reproduces the published
first-fit and best-fit baselines to two decimals.

A split ``spec`` is either one source or ``{"sources": [source, ...]}``, where a
source is one of

* ``{kind: weibull, count, num_items, seed, shape, scale, capacity}``: items drawn
  from ``scale * Weibull(shape)``, rounded and clipped to ``[1, capacity]``, with
  ``numpy.random.default_rng(seed)`` so every run sees the same instances;
* ``{kind: or_library, file}``: an OR-Library ``binpack*.txt`` file;
* ``{kind: funsearch_json, file}``: ``{name: {capacity, num_items, items}}``.

Any source may carry ``group``; the instances then carry it too, and the score
reports the excess of each group (``excess_pct_<group>``) and averages the groups,
so a 20-instance set and a 5-instance set count the same.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from evoengine.evaluation.scoring import InvalidOutput, ScoreResult


def load_instances(split: str, spec: Mapping[str, Any], data_dir: Path) -> list[dict]:
    """Return the instances of ``split``: dicts with name, capacity, items (and group)."""
    sources = spec.get("sources", [spec])
    instances: list[dict] = []
    for source in sources:
        kind = source.get("kind")
        if kind == "weibull":
            loaded = _weibull(split, source)
        elif kind == "or_library":
            loaded = _or_library(_data_file(data_dir, source["file"]))
        elif kind == "funsearch_json":
            loaded = _funsearch_json(_data_file(data_dir, source["file"]))
        else:
            raise ValueError(f"bin_packing split {split!r}: unknown source kind {kind!r}; "
                             "use weibull, or_library or funsearch_json")
        group = source.get("group")
        if group is not None:
            for inst in loaded:
                inst["group"] = str(group)
        instances.extend(loaded)
    return instances


def _data_file(data_dir: Path, name: str) -> Path:
    """Resolve ``name`` under the problem's ``data/`` (the problem folder also works)."""
    data_dir = Path(data_dir)
    for path in (data_dir / name, data_dir / "data" / name):
        if path.is_file():
            return path
    raise FileNotFoundError(f"bin_packing data file {name!r} not found under {data_dir}")


def _weibull(split: str, source: Mapping[str, Any]) -> list[dict]:
    capacity = int(source.get("capacity", 100))
    rng = np.random.default_rng(int(source["seed"]))
    instances = []
    for k in range(int(source["count"])):
        draws = rng.weibull(float(source.get("shape", 3.0)), int(source["num_items"]))
        items = np.clip(np.rint(draws * float(source.get("scale", 45.0))), 1, capacity)
        instances.append({"name": f"{split}_weibull_{k}", "capacity": capacity,
                          "items": items.astype(int).tolist()})
    return instances


def _or_library(path: Path) -> list[dict]:
    """Parse OR-Library binpack: P, then per problem: id, capacity n best_known, n sizes."""
    tokens = path.read_text().split()
    count, pos = int(tokens[0]), 1
    instances = []
    for _ in range(count):
        name = tokens[pos]
        capacity, n, best_known = (int(t) for t in tokens[pos + 1:pos + 4])
        items = [int(t) for t in tokens[pos + 4:pos + 4 + n]]
        if len(items) != n:
            raise ValueError(f"{path.name}: instance {name} is truncated")
        instances.append({"name": name, "capacity": capacity, "items": items,
                          "best_known": best_known})
        pos += 4 + n
    if pos != len(tokens):
        raise ValueError(f"{path.name}: {len(tokens) - pos} tokens after the last instance")
    return instances


def _funsearch_json(path: Path) -> list[dict]:
    instances = []
    for name, data in json.loads(path.read_text()).items():
        items = [int(x) for x in data["items"]]
        if len(items) != data.get("num_items", len(items)):
            raise ValueError(f"{path.name}: {name} has {len(items)} items, "
                             f"declares {data['num_items']}")
        instances.append({"name": name, "capacity": int(data["capacity"]), "items": items})
    return instances


def l1_bound(instance: Mapping[str, Any]) -> int:
    """The L1 lower bound: no packing uses fewer than ceil(total size / capacity) bins."""
    return math.ceil(sum(instance["items"]) / instance["capacity"])


def _check_assignment(assignment: object, instance: Mapping[str, Any]) -> np.ndarray:
    """Return the fill of each bin used, or raise InvalidOutput naming the instance."""
    name, items = instance["name"], instance["items"]
    n = len(items)
    if not isinstance(assignment, list):
        raise InvalidOutput(f"{name}: assignment is {type(assignment).__name__}, not a list")
    if len(assignment) != n:
        raise InvalidOutput(f"{name}: {len(assignment)} bin indices for {n} items")
    # type(x) is int rejects bool, float (NaN, inf) and numpy scalars in one test.
    for x in assignment:
        if type(x) is not int:
            raise InvalidOutput(f"{name}: bin index {repr(x)[:40]} is "
                                f"{type(x).__name__}, not an int")
    if n and (min(assignment) < 0 or max(assignment) >= n):
        raise InvalidOutput(f"{name}: bin index out of range [0, {n}): "
                            f"min {min(assignment)}, max {max(assignment)}")
    bins = np.asarray(assignment, dtype=np.int64)
    fills = np.bincount(bins, weights=np.asarray(items, dtype=float), minlength=n)
    over = int(np.argmax(fills))
    if fills[over] > instance["capacity"]:
        raise InvalidOutput(f"{name}: bin {over} holds {fills[over]:g} > capacity "
                            f"{instance['capacity']}")
    return fills[np.bincount(bins, minlength=n) > 0]


def _excess_pct(bins: Sequence[float], bounds: Sequence[float]) -> float:
    return (float(np.mean(bins)) - float(np.mean(bounds))) / float(np.mean(bounds)) * 100.0


def score(outputs: object, instances: list) -> ScoreResult:
    """Validate the bin assignments and score them as -(excess over L1 in %)."""
    if not isinstance(outputs, list):
        raise InvalidOutput(f"output is {type(outputs).__name__}, not a list of assignments")
    if len(outputs) != len(instances):
        raise InvalidOutput(f"{len(outputs)} assignments for {len(instances)} instances")
    bins, bounds, fill_stds = [], [], []
    for assignment, inst in zip(outputs, instances, strict=True):
        fills = _check_assignment(assignment, inst)
        bins.append(len(fills))
        bounds.append(l1_bound(inst))
        fill_stds.append(float(np.std(fills / inst["capacity"])))

    groups: dict[str, list[int]] = {}
    for i, inst in enumerate(instances):
        groups.setdefault(inst.get("group", ""), []).append(i)
    group_excess = {g: _excess_pct([bins[i] for i in idx], [bounds[i] for i in idx])
                    for g, idx in groups.items()}
    excess = float(np.mean(list(group_excess.values())))

    metrics = {"excess_pct": excess, "mean_bins": float(np.mean(bins)),
               "mean_l1": float(np.mean(bounds))}
    metrics.update({f"excess_pct_{g}": e for g, e in group_excess.items() if g})
    ratios = [(b - lb) / lb for b, lb in zip(bins, bounds, strict=True)]
    worst = instances[int(np.argmax(ratios))]["name"]
    feedback = (f"uses {excess:.2f}% more bins than the L1 bound "
                f"(mean {metrics['mean_bins']:.1f} vs {metrics['mean_l1']:.1f})")
    if len(group_excess) > 1:
        feedback += "; " + ", ".join(f"{g} {e:.2f}%" for g, e in group_excess.items())
    feedback += f"; worst instance {worst} ({max(ratios) * 100:.2f}% over L1)"
    return ScoreResult(score=-excess, metrics=metrics,
                       features={"bin_fill_std": float(np.mean(fill_stds))},
                       feedback=feedback)
