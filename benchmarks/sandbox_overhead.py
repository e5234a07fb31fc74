"""CPU per evaluation of the process sandbox alone: runners and their forked children.

What is measured: ``ProcessSandbox.run`` (the backend `evo run sandbox=process` uses)
at CONCURRENCY evaluations at once on ``bin_packing_quick``'s train instances, with
the seed program (best fit) as the candidate, after a warm-up that starts every
runner. Two harnesses: ``real`` (``problems/bin_packing/harness.py``: packs 2 x 500
items) and ``trivial`` (returns at once), with and without the candidate's own process
(``problem.candidate_process``). No model and no controller: the figure is what
isolation costs per evaluation, to set against the harness's own CPU in a warm
process (printed first). CPU = user + system time of the runners (read from /proc,
the CPU of the children they reaped included) over the timed evaluations; page faults
= their minor page faults, counted the same way (mostly the pages a fresh fork copies
before writing to them): an exact count where CPU times vary run to run.

    python benchmarks/sandbox_overhead.py [--evaluations 800] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from proc_cpu import tree_usage  # noqa: E402  (benchmarks/proc_cpu.py)

from evoengine.config.compose import load_run_config  # noqa: E402
from evoengine.evaluation.problem import Problem, import_file  # noqa: E402
from evoengine.evaluation.sandbox.base import HarnessJob, Limits  # noqa: E402
from evoengine.evaluation.sandbox.process import ProcessSandbox  # noqa: E402

BIN_PACKING = REPO / "problems" / "bin_packing"
TRIVIAL_HARNESS = "def run(candidate, instances):\n    return []\n"


def runners_usage(sandbox: ProcessSandbox) -> tuple[float, int]:
    """(user+system CPU, minor page faults) of the live runners and of the children
    they have reaped."""
    return tree_usage(sandbox.runner_pids())


async def measure(job: HarnessJob, code: str, evaluations: int, concurrency: int) -> dict:
    sandbox = ProcessSandbox(pool_size=concurrency)
    limits, gate = Limits(), asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            result = await sandbox.run(code, job, limits)
            if not result.ok:
                raise SystemExit(f"an evaluation failed: {result.error} {result.message}")

    try:
        await asyncio.gather(*(one() for _ in range(2 * concurrency)))  # start them all
        before, started = runners_usage(sandbox), time.perf_counter()
        host_before = resource.getrusage(resource.RUSAGE_SELF)
        await asyncio.gather(*(one() for _ in range(evaluations)))
        wall = time.perf_counter() - started
        host_after = resource.getrusage(resource.RUSAGE_SELF)
        after = runners_usage(sandbox)
    finally:
        await sandbox.close()
    host_cpu = (host_after.ru_utime - host_before.ru_utime) + (
        host_after.ru_stime - host_before.ru_stime)
    return {"evals_per_s": evaluations / wall,
            "sandbox_cpu_ms_per_eval": 1000 * (after[0] - before[0]) / evaluations,
            "sandbox_faults_per_eval": (after[1] - before[1]) / evaluations,
            "host_cpu_ms_per_eval": 1000 * host_cpu / evaluations}


def warm_harness_cpu_ms(instances: list, code_path: Path, repeats: int = 20) -> float:
    """CPU of one run of the real harness in this (warm) process, the best of a few."""
    harness = import_file(BIN_PACKING / "harness.py", "bench_sbx_harness")
    candidate = import_file(code_path, "bench_sbx_candidate")
    times = []
    for _ in range(repeats):
        start = time.process_time()
        harness.run(candidate, instances)
        times.append(time.process_time() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--evaluations", type=int, default=800)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    config, _ = load_run_config(["problem=bin_packing_quick", "~problem.splits.validation",
                                 "~problem.splits.test"])
    instances = Problem(config.problem).instances("train")
    code = (BIN_PACKING / "initial.py").read_text()
    print(f"real harness in a warm process: "
          f"{warm_harness_cpu_ms(instances, BIN_PACKING / 'initial.py'):.2f} ms CPU", flush=True)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="sandbox-overhead-") as work:
        trivial = Path(work) / "harness.py"
        trivial.write_text(TRIVIAL_HARNESS)
        for harness_name, harness in (("trivial", trivial), ("real", BIN_PACKING / "harness.py")):
            for own_process in (False, True):
                job = HarnessJob(key=f"bench/{harness_name}/{own_process}", harness_path=harness,
                                 instances=instances, candidate_process=own_process)
                runs = [asyncio.run(measure(job, code, args.evaluations, args.concurrency))
                        for _ in range(args.repeats)]
                label = f"{harness_name}, candidate_process={str(own_process).lower()}"
                results[label] = {key: statistics.median(run[key] for run in runs)
                                  for key in runs[0]} | {"runs": runs}
                row = results[label]
                print(f"{label:>38}: {row['evals_per_s']:6.0f} eval/s, sandbox "
                      f"{row['sandbox_cpu_ms_per_eval']:.2f} ms CPU and "
                      f"{row['sandbox_faults_per_eval']:.0f} page faults per evaluation, host "
                      f"{row['host_cpu_ms_per_eval']:.2f} ms", flush=True)
    machine = {"platform": platform.platform(), "python": platform.python_version(),
               "cpus": os.cpu_count()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sandbox_overhead.json").write_text(json.dumps(
        {"machine": machine, "evaluations": args.evaluations,
         "concurrency": args.concurrency, "results": results}, indent=2))


if __name__ == "__main__":
    main()
