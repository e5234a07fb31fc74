"""Write tsp_gls's uniform instance sets with reference optima, and copy its TSPLIB files.

    pip install elkai && python problems/tsp_gls/make_data.py

The instances are drawn and solved exactly as tsp's (``problems/tsp/make_data.py``,
whose :func:`write_uniform_set` this script calls): uniform points scaled by 10,000,
TSPLIB EUC_2D distances, reference optima from LKH-3 (elkai). The TSPLIB test
instances (those of up to 300 cities) are copied from tsp's ``data/``.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TSP_DATA = HERE.parent / "tsp" / "data"

# (file, seed, {n: count})
GLS_SETS = [
    ("uniform_train.json", 20250303, {20: 4, 50: 4, 100: 4, 200: 4}),
    ("uniform_validation.json", 20250404, {50: 4, 100: 4, 200: 4}),
]
TSPLIB_MAX_N = 300


def main(data_dir: Path = HERE / "data") -> int:
    spec = importlib.util.spec_from_file_location("tsp_make_data", HERE.parent / "tsp"
                                                  / "make_data.py")
    assert spec is not None and spec.loader is not None
    tsp_make_data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tsp_make_data)
    data_dir.mkdir(exist_ok=True)
    (data_dir / "tsplib").mkdir(exist_ok=True)
    optima = json.loads((TSP_DATA / "tsplib_optima.json").read_text())
    kept = {}
    for name in sorted(optima):
        coords = tsp_make_data._tsp_score().parse_tsplib(TSP_DATA / "tsplib" / f"{name}.tsp")
        if len(coords) <= TSPLIB_MAX_N:
            shutil.copyfile(TSP_DATA / "tsplib" / f"{name}.tsp",
                            data_dir / "tsplib" / f"{name}.tsp")
            kept[name] = optima[name]
    (data_dir / "tsplib_optima.json").write_text(json.dumps(kept, indent=2) + "\n")
    print(f"copied {len(kept)} TSPLIB instances of up to {TSPLIB_MAX_N} cities")
    for name, seed, counts in GLS_SETS:
        tsp_make_data.write_uniform_set(data_dir / name, seed, counts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
