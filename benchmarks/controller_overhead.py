"""Engine CPU per evaluation at archive sizes of 1k, 10k and 100k programs.

What is measured: the whole ask/tell step of the real controller (parent selection,
the offline GP mutator, duplicate check, the SQLite writes, grid and island updates,
migration, stats) with a trivial evaluator that scores instantly in-process, so the
figure is the engine's own overhead, not the sandbox's. The archive is pre-filled
with N stored programs, rebuilt from the database as `evo resume` does, and then the
controller runs STEPS more steps. CPU time is this process's user+system time.

    python benchmarks/controller_overhead.py [--sizes 1000 10000 100000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import resource
import statistics
import tempfile
import time
import zlib
from pathlib import Path

from sqlalchemy import insert

from evoengine.archive.archive import Archive
from evoengine.archive.models import Program
from evoengine.archive.store import ArchiveStore, make_engine, sqlite_url
from evoengine.config.compose import load_run_config
from evoengine.controller.loop import Controller
from evoengine.controller.setup import RunContext, feature_space
from evoengine.controller.stats import RunStats
from evoengine.evaluation.problem import Problem
from evoengine.evaluation.result import EvaluationResult
from evoengine.llm.factory import make_mutator


class TrivialEvaluator:
    """Scores a program instantly from a checksum of its text (no sandbox)."""

    async def evaluate(self, code: str, split: str = "train") -> EvaluationResult:
        digest = zlib.crc32(code.encode())
        return EvaluationResult(valid=True, score=-(digest % 10_000) / 1000.0,
                                features={"code_length": float(len(code)),
                                          "bin_fill_std": 0.02 + (digest % 120) / 1000.0})


def _fill(store: ArchiveStore, config_islands: int, size: int, seed_code: str) -> None:
    """Insert ``size`` distinct, valid programs spread over islands and cells."""
    rows = []
    for i in range(size):
        code = seed_code.replace("return -(bins - item)", f"return -(bins - item) * {1 + i}")
        digest = zlib.crc32(code.encode())
        rows.append(dict(
            run_id=store.run_id, step=None, island=i % config_islands, generation=1,
            parent_id=None, second_parent_id=None, operator="bench", model="bench",
            code=code, code_hash=f"{digest:x}-{i}", valid=True,
            score=-(digest % 10_000) / 1000.0, error=None, metrics={},
            features={"code_length": float(len(code)),
                      "bin_fill_std": 0.02 + (digest % 120) / 1000.0},
            cell=None, feedback=""))
    with store.engine.begin() as conn:
        for start in range(0, len(rows), 5000):
            conn.execute(insert(Program), rows[start:start + 5000])


def measure(size: int, steps: int, workdir: Path) -> dict[str, float]:
    config, _ = load_run_config(["problem=bin_packing", "llm=gp", "ui=none",
                                 f"search.max_evaluations={size + steps + 1}",
                                 "search.llm_concurrency=1", "search.eval_concurrency=1"])
    engine = make_engine(sqlite_url(workdir / f"bench-{size}-{time.time_ns()}.db"))
    store = ArchiveStore.create_run(engine, f"bench-{size}", "bin_packing", 0, {})
    problem = Problem(config.problem)
    _fill(store, config.search.num_islands, size, problem.initial_code)
    archive = Archive(config.search, feature_space(config), config.seed)
    started = time.perf_counter()
    programs = list(store.iter_programs())
    for record in programs:
        record.cell = archive.locate_cell(record.features)
    archive.rebuild(programs)
    rebuild_s = time.perf_counter() - started
    config.search.max_evaluations = archive.evaluations + steps
    mutator, _ = make_mutator(config.llm, config.problem)
    context = RunContext(config=config, run_dir=workdir, db_url="", store=store,
                         archive=archive, problem=problem,
                         evaluator=TrivialEvaluator(),  # type: ignore[arg-type]
                         backend=None, mutator=mutator, notes=[],  # type: ignore[arg-type]
                         next_step=0)
    stats = RunStats("bench", "bin_packing", "gp", "none", config.search.max_evaluations)
    controller = Controller(context, stats)
    before_evals = archive.evaluations
    cpu0, wall0 = time.process_time(), time.perf_counter()
    asyncio.run(controller.run())
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    evaluations = archive.evaluations - before_evals
    engine.dispose()
    return {"cpu_ms_per_eval": 1000 * cpu / evaluations,
            "wall_ms_per_eval": 1000 * wall / evaluations,
            "evaluations": evaluations, "rebuild_s": rebuild_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            runs = [measure(size, args.steps, Path(tmp)) for _ in range(args.repeats)]
            cpu = [r["cpu_ms_per_eval"] for r in runs]
            results[size] = {"median_cpu_ms_per_eval": statistics.median(cpu),
                             "min_cpu_ms_per_eval": min(cpu), "max_cpu_ms_per_eval": max(cpu),
                             "median_wall_ms_per_eval":
                                 statistics.median(r["wall_ms_per_eval"] for r in runs),
                             "median_rebuild_s": statistics.median(r["rebuild_s"] for r in runs),
                             "runs": runs}
            results[size]["peak_rss_mb_so_far"] = \
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"{size:>7} programs: {results[size]['median_cpu_ms_per_eval']:.3f} ms CPU "
                  f"per evaluation (median of {args.repeats}; min {min(cpu):.3f}, "
                  f"max {max(cpu):.3f}); rebuild {results[size]['median_rebuild_s']:.2f} s; "
                  f"peak RSS so far {results[size]['peak_rss_mb_so_far']:.0f} MB", flush=True)
    machine = {"python": platform.python_version(), "machine": platform.machine(),
               "processor": platform.processor(), "cpus": __import__("os").cpu_count()}
    (args.out / "controller_overhead.json").write_text(
        json.dumps({"machine": machine, "steps": args.steps, "results": results}, indent=2))


if __name__ == "__main__":
    main()
