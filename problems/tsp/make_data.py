"""Write the uniform instance sets of tsp with their reference optimal tour lengths.

    pip install elkai && python problems/tsp/make_data.py

Points are drawn uniformly from the unit square with ``numpy.random.default_rng(seed)``,
scaled by ``scale`` (10,000) and rounded to integers, so that TSPLIB's rounded EUC_2D
distances keep four significant digits. The reference length of each instance is the
best tour LKH-3 finds (through the ``elkai`` package, ``runs`` restarts) under the same
EUC_2D distances the scorer uses. LKH-3 proves nothing, but on instances this small it
finds the optimum in practice; the script first checks that it reproduces the published
TSPLIB optima of eil51, kroB100 and ch130. The scorer reads the files written here and
never needs elkai. ``tsp_gls/make_data.py`` reuses :func:`write_uniform_set`.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path
from types import ModuleType

import numpy as np

HERE = Path(__file__).resolve().parent
SCALE = 10_000
LKH_RUNS = 10

# (file, seed, {n: count}): tsp's train and validation sets.
TSP_SETS = [
    ("uniform_train.json", 20250101, {50: 10, 100: 10}),
    ("uniform_validation.json", 20250202, {200: 5}),
]


def _tsp_score() -> ModuleType:
    """tsp's score.py (its EUC_2D distance and TSPLIB parser), imported by path."""
    spec = importlib.util.spec_from_file_location("tsp_make_data_score", HERE / "score.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reference_length(coords: np.ndarray, runs: int = LKH_RUNS) -> int:
    """The best tour length LKH-3 (elkai) finds under EUC_2D distances."""
    import elkai  # only this script needs it

    score = _tsp_score()
    matrix = score.euc_2d(coords[:, None, :], coords[None, :, :]).astype(int)
    tour = elkai.DistanceMatrix(matrix.tolist()).solve_tsp(runs=runs)[:-1]
    if sorted(tour) != list(range(len(coords))):
        raise RuntimeError("elkai returned something that is not a tour")
    return score.tour_length(np.asarray(tour), coords)


def check_against_tsplib(data_dir: Path, names: tuple[str, ...] = ("eil51", "kroB100", "ch130")
                         ) -> None:
    """Fail loudly if LKH-3 here does not reproduce published optima."""
    score = _tsp_score()
    for inst in score.load_tsplib(data_dir, list(names)):
        found = reference_length(np.asarray(inst["coords"]))
        if found != inst["optimum"]:
            raise RuntimeError(f"elkai found {found} on {inst['name']}, the published "
                               f"optimum is {inst['optimum']}")
        print(f"  {inst['name']}: elkai {found} = published optimum")


def write_uniform_set(path: Path, seed: int, counts: dict[int, int], scale: int = SCALE,
                      runs: int = LKH_RUNS) -> None:
    """Draw ``counts[n]`` instances of each size ``n`` and store them with their optima."""
    rng = np.random.default_rng(seed)
    instances = []
    for n, count in counts.items():
        for k in range(count):
            coords = np.rint(rng.random((n, 2)) * scale)
            started = time.perf_counter()
            optimum = reference_length(coords, runs)
            print(f"  {path.name} n{n}_{k}: {optimum} ({time.perf_counter() - started:.1f} s)")
            instances.append({"name": f"{path.stem}_n{n}_{k}", "optimum": optimum,
                              "coords": coords.astype(int).tolist()})
    document = {
        "about": (f"uniform points in the unit square scaled by {scale} and rounded; "
                  "distances TSPLIB EUC_2D; optimum = best tour of LKH-3 (elkai, "
                  f"runs={runs}); written by make_data.py"),
        "seed": seed,
        "counts": {str(n): c for n, c in counts.items()},
        "instances": instances,
    }
    path.write_text(json.dumps(document, separators=(",", ":")) + "\n")


def main(data_dir: Path = HERE / "data") -> int:
    print("checking elkai against TSPLIB optima")
    check_against_tsplib(HERE / "data")
    for name, seed, counts in TSP_SETS:
        write_uniform_set(data_dir / name, seed, counts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
