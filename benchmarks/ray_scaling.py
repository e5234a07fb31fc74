"""Evaluations per second through ``executor=ray`` with 1, 2 and 4 sandbox slots.

Starts a one-node Ray cluster on 127.0.0.1 (``ray start --head`` in a temp dir of its
own, 4 CPUs declared), then for each slot count N sends ``--evaluations`` candidates
through ``RaySandbox`` (the backend a run uses, process sandbox on the node) with N in
flight. Each candidate burns a fixed amount of CPU (``--work`` loop iterations), so
the ideal is N times the 1-slot rate; efficiency = rate(N) / (N * rate(1)). Each
setting is measured ``--repeats`` times and the median is reported. The cluster's
processes are killed at the end.

    python benchmarks/ray_scaling.py --evaluations 24 --repeats 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.ray_cluster: the local cluster the Ray tests start

from evoengine.config.scale_schema import RayConfig  # noqa: E402
from evoengine.config.schema import SandboxConfig  # noqa: E402
from evoengine.evaluation.sandbox.base import HarnessJob, Limits  # noqa: E402
from evoengine.evaluation.sandbox.ray_backend import RaySandbox  # noqa: E402
from tests.ray_cluster import LocalRayCluster  # noqa: E402

HARNESS = "def run(candidate, instances):\n    return [candidate.burn(n) for n in instances]\n"
CANDIDATE = ("def burn(n):\n    total = 0\n    for i in range(n):\n"
             "        total += i * i % 7\n    return total\n")


async def measure(backend: RaySandbox, job: HarnessJob, slots: int, count: int) -> float:
    """Evaluations per second with ``slots`` in flight (after one warm-up each)."""
    limits = Limits(timeout_s=120, cpu_s=120)
    gate = asyncio.Semaphore(slots)

    async def one() -> None:
        async with gate:
            raw = await backend.run(CANDIDATE, job, limits)
            if not raw.ok:
                raise RuntimeError(f"evaluation failed: {raw.message}")

    await asyncio.gather(*(one() for _ in range(slots)))  # warm the runners
    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(count)))
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluations", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=int, default=3_000_000, help="loop iterations")
    parser.add_argument("--slots", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ray_scaling.json"))
    args = parser.parse_args()

    cluster = LocalRayCluster(cpus=max(args.slots))
    work_dir = Path(tempfile.mkdtemp(prefix="evo-raybench-job-"))
    harness = work_dir / "harness.py"
    harness.write_text(HARNESS)
    job = HarnessJob(key="burn", harness_path=harness, instances=[args.work])
    rates: dict[int, list[float]] = {}
    try:
        cluster.start_head()
        for slots in args.slots:
            backend = RaySandbox(RayConfig(address=cluster.address, slots_per_node=slots),
                                 SandboxConfig(backend="process"))
            backend.connect()
            try:
                rates[slots] = [asyncio.run(measure(backend, job, slots, args.evaluations))
                                for _ in range(args.repeats)]
            finally:
                asyncio.run(backend.close())
    finally:
        cluster.stop()
        shutil.rmtree(work_dir, ignore_errors=True)

    base = statistics.median(rates[args.slots[0]]) / args.slots[0]
    rows = []
    print(f"{'slots':>5} {'evals/s (median)':>17} {'efficiency':>10}")
    for slots, values in rates.items():
        median = statistics.median(values)
        rows.append({"slots": slots, "evals_per_s": round(median, 3),
                     "runs": [round(v, 3) for v in values],
                     "efficiency": round(median / (slots * base), 3)})
        print(f"{slots:>5} {median:>17.2f} {rows[-1]['efficiency']:>10.2f}")
    result = {"machine": f"{platform.node()} {os.cpu_count()} CPUs, {platform.processor()}",
              "evaluations": args.evaluations, "repeats": args.repeats, "work": args.work,
              "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
