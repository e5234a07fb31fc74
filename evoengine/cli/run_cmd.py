"""``evo run`` and ``evo resume``: drive a run with a dashboard, then summarise it."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from pathlib import Path

from omegaconf import OmegaConf
from rich.console import Console
from sqlalchemy.engine import make_url

from evoengine.archive.store import StoreError
from evoengine.config.compose import load_run_config
from evoengine.config.problem_folders import discover_problems
from evoengine.controller.dashboard import Dashboard
from evoengine.controller.loop import STOPPED_BY_USER, Controller
from evoengine.controller.setup import RunContext, reopen_run, start_run
from evoengine.controller.stats import RunStats
from evoengine.controller.summary import (
    UNTRUSTED_SCORE_NOTE,
    ValidatedProgram,
    summary_lines,
    validate_best,
)
from evoengine.terminal import command_line, markup_free, shown

BEST_PROGRAM_FILE = "best_program.py"


def run_command(overrides: list[str], show_config: bool = False) -> int:
    config, node = load_run_config(overrides)
    if show_config:
        print(OmegaConf.to_yaml(node))
        return 0
    return execute(start_run(config))


def resume_command(run_dir: str, overrides: list[str]) -> int:
    # a database URL stays a string: Path() would fold its "//"
    target = run_dir if "://" in run_dir else Path(run_dir)
    return execute(reopen_run(target, overrides), resumed=True)


def execute(ctx: RunContext, resumed: bool = False) -> int:
    """Run the controller to the end and print where everything is."""
    console = Console(soft_wrap=True)
    config = ctx.config
    verb = "resuming" if resumed else "starting"
    console.print(f"{verb} run [bold]{markup_free(config.name or '')}[/] in "
                  f"{markup_free(str(ctx.run_dir))}")
    stats = RunStats(run_name=config.name or "", problem=config.problem.name,
                     mutator=ctx.mutator.name, sandbox=ctx.backend.name,
                     max_evaluations=config.search.max_evaluations)
    controller = Controller(ctx, stats)  # may add notes (rl.enabled)
    for note in ctx.notes:
        console.print(shown(note), markup=False)
    if not config.problem.trusted_score:
        console.print(f"[yellow]{UNTRUSTED_SCORE_NOTE}[/]")
        stats.message = UNTRUSTED_SCORE_NOTE
    validated: list[ValidatedProgram] = []
    status = "failed"
    # What start-up built (modules, config, the rebuilt archive) lives as long as the
    # run: out of the collector's sight, a full collection takes ~2 ms instead of ~70.
    # The collector was off during start-up when launched as ``evo`` (cli.entry).
    gc.freeze()
    gc.enable()
    try:
        with Dashboard(stats, config.ui, console) as dashboard:
            controller.on_step = dashboard.tick
            validated = asyncio.run(_drive(ctx, controller))
        status = ("interrupted" if controller.stop_reason == STOPPED_BY_USER
                  else "failed" if controller.model_unusable else "finished")
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):  # before the search took Ctrl-C over
            status = "interrupted"
        with contextlib.suppress(StoreError):  # the store may be what failed
            ctx.store.set_status(status, controller.elapsed_s, stats.cost)
        raise
    ctx.store.set_status(status, controller.elapsed_s, stats.cost)
    try:
        # the reason may quote a model server's error message
        console.print(f"run {status}: {shown(controller.stop_reason or 'done')}", markup=False)
        _summarise(ctx, console, validated)
    finally:
        if ctx.lock is not None:
            ctx.lock.release()
    return 1 if controller.model_unusable else 0  # a script can tell it from a finished run


async def _drive(ctx: RunContext, controller: Controller) -> list[ValidatedProgram]:
    """Run the search, then score its best programs on validation (not when stopped
    by the user: they asked to stop, and `evo resume` will do it)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, controller.request_stop)
    try:
        await controller.run()
        if controller.stop_reason == STOPPED_BY_USER:
            return []
        validation = asyncio.ensure_future(validate_best(
            ctx.archive, ctx.evaluator, ctx.store, ctx.config.search.validate_top,
            controller.charge))
        stopped: list[int] = []

        def stop_validation() -> None:
            stopped.append(1)
            validation.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):  # from now on Ctrl-C ends the validation
            loop.add_signal_handler(sig, stop_validation)
        try:
            return await validation
        except asyncio.CancelledError:
            if not stopped:
                raise  # this coroutine itself was cancelled
            print("validation of the best programs stopped by user (the scores it stored "
                  "are kept)")
            return []
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await ctx.backend.close()
        close_mutator = getattr(ctx.mutator, "close", None)
        if close_mutator is not None:
            await close_mutator()


def _summarise(ctx: RunContext, console: Console, validated: list[ValidatedProgram]) -> None:
    def say(line: str) -> None:  # names, paths and URLs as they are: no Rich markup
        console.print(line, markup=False)

    best = ctx.archive.best
    if best is None:
        say("no valid program was found")
        return
    best_path = ctx.run_dir / BEST_PROGRAM_FILE
    try:
        best_path.write_text(best.code)
    except OSError as exc:  # a full disk, say: the program is in the archive all the same
        say(f"cannot write {best_path} ({exc.strerror or exc}); the best program is in "
            "the archive: evo browse shows it")
    validation = best.validation_score
    say(f"best program: id {best.id}, island {best.island}, "
        f"generation {best.generation}, operator {best.operator}")
    say(f"  train score      {best.score:.6g}")
    if validation is not None:
        gap = best.score - validation if best.score is not None else float("nan")
        say(f"  validation score {validation:.6g}  (train - validation = {gap:.4g})")
    say(f"  code             {best_path}")
    shown_url = make_url(ctx.db_url).render_as_string(hide_password=True)
    say(f"  archive          {shown_url} ({ctx.archive.programs} programs, "
        f"{ctx.archive.evaluations} evaluations)")
    for line in summary_lines(validated, "validation" in ctx.problem.splits,
                              ctx.config.problem.trusted_score):
        say(line)
    known = discover_problems().get(ctx.problem.name) == ctx.problem.folder
    problem = ctx.problem.name if known else str(ctx.problem.folder)
    split = next((s for s in ("test", "validation") if s in ctx.problem.splits), "train")
    evaluate = command_line("evo", "eval", f"problem={problem}", f"program={best_path}",
                            f"split={split}")
    say(f"next: {evaluate}  |  {command_line('evo', 'resume', ctx.run_dir)} "
        "search.max_evaluations=N")
    say(f"look:  {command_line('evo', 'browse', ctx.run_dir)}  |  "
        f"{command_line('evo', 'report', ctx.run_dir)}")
