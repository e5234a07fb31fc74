"""How `evo browse` holds up on a large archive: time to first screen, to turn a page,
to sort, to filter and to open a program, at 100k programs.

The archive is filled the way ``controller_overhead.py`` fills one (batched Core
inserts of distinct, valid programs spread over islands), plus what a real run also
stores: a grid cell, a parent (so lineage has depth), a few failures, and one train
evaluation row per program. The browser then runs headless under Textual's pilot and
each action is timed as its key runs it (the same method call, without the pilot's
simulated typing) until the screen has redrawn; medians of --repeats.

    python benchmarks/browse_scale.py [--size 100000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
import zlib
from pathlib import Path

from sqlalchemy import insert

from evoengine.archive.models import Evaluation, Program
from evoengine.archive.store import ArchiveStore, make_engine, sqlite_url
from evoengine.config.compose import load_run_config
from evoengine.controller.setup import feature_space
from evoengine.evaluation.problem import Problem
from evoengine.tui.app import BrowseApp
from evoengine.tui.queries import ArchiveReader
from evoengine.tui.source import open_archive_engine
from evoengine.tui.widgets import ProgramTable

OPERATORS = ["gp:grow", "gp:crossover", "gp:perturb_constant", "gp:swap_operator"]


def fill(db: Path, size: int) -> None:
    """A run with ``size`` programs (5% invalid) and one evaluation each."""
    config, _ = load_run_config(["problem=bin_packing", "llm=gp", "ui=none"])
    space = feature_space(config)
    engine = make_engine(sqlite_url(db))
    store = ArchiveStore.create_run(engine, "bench", "bin_packing", 0,
                                    __import__("dataclasses").asdict(config))
    seed_code = Problem(config.problem).initial_code
    islands = config.search.num_islands
    for start in range(0, size, 5000):
        programs, evaluations = [], []
        for i in range(start, min(size, start + 5000)):
            code = seed_code.replace("return -(bins - item)",
                                     f"return -(bins - item) * {1 + i}")
            digest = zlib.crc32(code.encode())
            valid = digest % 20 != 0
            features = {"code_length": float(len(code) + digest % 900),
                        "bin_fill_std": 0.02 + (digest % 120) / 1000.0}
            score = -(digest % 10_000) / 1000.0 if valid else None
            programs.append(dict(
                id=i + 1, run_id=store.run_id, step=i, island=i % islands,
                generation=i // 400, parent_id=(i + 1 - islands) if i >= islands else None,
                second_parent_id=None, operator=OPERATORS[digest % len(OPERATORS)],
                model="gp", code=code, code_hash=f"{digest:x}-{i}", valid=valid, score=score,
                error=None if valid else "crash", metrics={"excess_pct": -(score or 0)},
                features=features,
                cell=",".join(map(str, space.cell(features))) if valid else None,
                feedback="uses more bins than the L1 bound" if valid else "Traceback: ...",
                validation_score=None))
            evaluations.append(dict(program_id=i + 1, split="train", valid=valid,
                                    score=score, error=None if valid else "crash",
                                    metrics={}, features=features, feedback="",
                                    wall_s=0.1, cpu_s=0.1, stage=0))
        with engine.begin() as conn:
            conn.execute(insert(Program), programs)
            conn.execute(insert(Evaluation), evaluations)
    engine.dispose()


async def _until_idle(pilot: object) -> None:
    await pilot.pause()  # type: ignore[attr-defined]


async def measure_once(db: Path) -> dict[str, float]:
    """Seconds for each user action, from the key press to the updated screen."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    app = BrowseApp(ArchiveReader(open_archive_engine(str(db))), poll_s=0)
    async with app.run_test(size=(160, 50)) as pilot:
        await _until_idle(pilot)
        timings["first_screen"] = time.perf_counter() - started
        table = app.screen.query_one(ProgramTable)
        assert table.total > 0

        async def timed(name: str, action: object) -> None:
            """The action as its key runs it, then until the screen has redrawn."""
            began = time.perf_counter()
            action()  # type: ignore[operator]
            await _until_idle(pilot)
            timings[name] = time.perf_counter() - began

        screen = app.screen
        await timed("next_page", lambda: table.turn_page(1))
        await timed("page_500", lambda: table.turn_page(498))  # OFFSET ~50k
        await timed("sort_validation", lambda: table.sort_by("validation"))
        await timed("sort_operator", lambda: table.sort_by("operator"))
        await timed("filter", lambda: table.set_filter("op~grow score>-5"))
        best = app.reader.best_program_id(screen.run_id)  # type: ignore[attr-defined]
        await timed("open_program", lambda: app.open_program(best))
        await timed("follow_parent", app.screen.action_parent)  # type: ignore[attr-defined]
        await timed("grid_island", lambda: screen.action_island(1))  # type: ignore
        await timed("refresh_all", screen.refresh_data)  # type: ignore[attr-defined]
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "archive.db"
        began = time.perf_counter()
        fill(db, args.size)
        print(f"filled {args.size:,} programs in {time.perf_counter() - began:.1f} s "
              f"({db.stat().st_size / 1e6:.0f} MB)", flush=True)
        runs = [asyncio.run(measure_once(db)) for _ in range(args.repeats)]
    medians = {name: statistics.median(r[name] for r in runs) for name in runs[0]}
    for name, value in medians.items():
        spread = [r[name] for r in runs]
        print(f"{name:>20}: {1000 * value:8.1f} ms  (min {1000 * min(spread):.1f}, "
              f"max {1000 * max(spread):.1f})")
    machine = {"python": platform.python_version(), "machine": platform.machine(),
               "processor": platform.processor(), "cpus": os.cpu_count()}
    (args.out / "browse_scale.json").write_text(json.dumps(
        {"machine": machine, "size": args.size, "medians_s": medians, "runs": runs},
        indent=2))


if __name__ == "__main__":
    main()
