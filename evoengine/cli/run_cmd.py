"""``evo run`` and ``evo resume``: drive a run with a dashboard, then summarise it."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from omegaconf import OmegaConf
from rich.console import Console

from evoengine.config.compose import discover_problems, load_run_config
from evoengine.controller.dashboard import Dashboard
from evoengine.controller.loop import STOPPED_BY_USER, Controller
from evoengine.controller.setup import RunContext, reopen_run, start_run
from evoengine.controller.stats import RunStats

BEST_PROGRAM_FILE = "best_program.py"


def run_command(overrides: list[str], show_config: bool = False) -> int:
    config, node = load_run_config(overrides)
    if show_config:
        print(OmegaConf.to_yaml(node))
        return 0
    return execute(start_run(config))


def resume_command(run_dir: str, overrides: list[str]) -> int:
    return execute(reopen_run(Path(run_dir), overrides), resumed=True)


def execute(ctx: RunContext, resumed: bool = False) -> int:
    """Run the controller to the end and print where everything is."""
    console = Console(soft_wrap=True)
    config = ctx.config
    verb = "resuming" if resumed else "starting"
    console.print(f"{verb} run [bold]{config.name}[/] in {ctx.run_dir}")
    for note in ctx.notes:
        console.print(note)
    stats = RunStats(run_name=config.name or "", problem=config.problem.name,
                     mutator=ctx.mutator.name, sandbox=ctx.backend.name,
                     max_evaluations=config.search.max_evaluations)
    controller = Controller(ctx, stats)
    status = "failed"
    try:
        with Dashboard(stats, config.ui, console) as dashboard:
            controller.on_step = dashboard.tick
            asyncio.run(_drive(ctx, controller))
        status = "interrupted" if controller.stop_reason == STOPPED_BY_USER else "finished"
    finally:
        ctx.store.set_status(status, controller.elapsed_s, stats.cost)
    console.print(f"run {status}: {controller.stop_reason or 'done'}")
    _summarise(ctx, console)
    return 0


async def _drive(ctx: RunContext, controller: Controller) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, controller.request_stop)
    try:
        await controller.run()
        if controller.stop_reason != STOPPED_BY_USER:
            await _validate_best(ctx)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await ctx.backend.close()
        close_mutator = getattr(ctx.mutator, "close", None)
        if close_mutator is not None:
            await close_mutator()


async def _validate_best(ctx: RunContext) -> None:
    """Score the best program on the validation split (the search never sees it)."""
    best = ctx.archive.best
    if best is None or "validation" not in ctx.problem.splits:
        return
    if best.validation_score is not None:
        return
    result = await ctx.evaluator.evaluate(best.code, "validation")
    ctx.store.set_validation_score(best.id, result)
    best.validation_score = result.score


def _summarise(ctx: RunContext, console: Console) -> None:
    best = ctx.archive.best
    if best is None:
        console.print("no valid program was found")
        return
    best_path = ctx.run_dir / BEST_PROGRAM_FILE
    best_path.write_text(best.code)
    validation = best.validation_score
    console.print(f"best program: id {best.id}, island {best.island}, "
                  f"generation {best.generation}, operator {best.operator}")
    console.print(f"  train score      {best.score:.6g}")
    if validation is not None:
        gap = best.score - validation if best.score is not None else float("nan")
        console.print(f"  validation score {validation:.6g}  (train - validation = {gap:.4g})")
    console.print(f"  code             {best_path}")
    console.print(f"  archive          {ctx.db_url} ({ctx.archive.programs} programs, "
                  f"{ctx.archive.evaluations} evaluations)")
    known = discover_problems().get(ctx.problem.name) == ctx.problem.folder
    problem = ctx.problem.name if known else str(ctx.problem.folder)
    console.print(f"next: evo eval problem={problem} program={best_path} split=test"
                  f"  |  evo resume {ctx.run_dir} search.max_evaluations=N")
