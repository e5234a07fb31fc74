"""``evo``: the command-line entry point. Each subcommand lives in its own module."""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import sys
from types import ModuleType

from evoengine.cli.sandbox_cmd import add_sandbox_parser, sandbox_command
from evoengine.errors import UserError
from evoengine.terminal import shown

#: The errors a user can cause and fix besides UserError, printed as one line, by
#: module. A class can only have been raised once its module was imported, so they are
#: looked up in ``sys.modules`` when one is caught: importing them here took half a
#: second of every `evo --help` (the store brings SQLAlchemy and Alembic).
USER_ERROR_CLASSES: tuple[tuple[str, str], ...] = (
    ("evoengine.config.checks", "ConfigError"),
    ("evoengine.archive.store", "StoreError"),
    ("evoengine.evaluation.problem", "ProblemError"),
    ("evoengine.controller.loop", "RunError"),
    ("evoengine.mutation.evolve_block", "EvolveBlockError"),
    ("evoengine.mutation.prompts", "PromptError"),
    ("evoengine.llm.types", "LLMError"),
)


def is_user_error(exc: BaseException) -> bool:
    """Whether ``exc`` is one of the errors ``evo`` prints as one line."""
    if isinstance(exc, UserError):
        return True
    return any(isinstance(exc, getattr(sys.modules[module], name))
               for module, name in USER_ERROR_CLASSES if module in sys.modules)

EPILOG = """examples:
  evo run problem=bin_packing search.max_evaluations=300 seed=1
  evo resume runs/<name> search.max_evaluations=600
  evo eval problem=bin_packing program=my_priority.py split=validation
  evo problems
  evo new-problem my_problem && evo eval problem=my_problem program=problems/my_problem/initial.py
  evo browse runs/<name>  |  evo report runs/<name>
  evo export runs/<name> --format dpo  |  evo train runs/<name> --model <hf model dir>
  evo sandbox build && evo sandbox status
"""

#: Subcommands that live in a module of their own. Each module defines
#: ``add_parser(commands)`` (register the subcommand; keep imports there light) and
#: ``command(args) -> int`` (run it; import heavy dependencies inside). Add a line here
#: to add a subcommand.
PLUGGED_COMMANDS: dict[str, str] = {
    "browse": "evoengine.cli.browse_cmd",
    "report": "evoengine.cli.report_cmd",
    "export": "evoengine.cli.export_cmd",
    "train": "evoengine.cli.train_cmd",
    "new-problem": "evoengine.cli.new_problem_cmd",
}


def plugged_module(command: str) -> ModuleType:
    return importlib.import_module(PLUGGED_COMMANDS[command])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evo", description=__doc__, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="start a search (KEY=VALUE overrides of conf/)")
    run.add_argument("--cfg", action="store_true", help="print the composed config and exit")
    run.add_argument("overrides", nargs="*", default=[], metavar="KEY=VALUE")
    resume = commands.add_parser("resume", help="continue a run from its database")
    resume.add_argument("run_dir", help="runs/<name> (or a database URL)")
    resume.add_argument("overrides", nargs="*", default=[], metavar="KEY=VALUE")
    evaluate = commands.add_parser(
        "eval", help="run one program through the sandbox and print its score",
        description="evo eval problem=NAME program=PATH [split=train|validation|test] "
                    "[KEY=VALUE ...]")
    evaluate.add_argument("overrides", nargs="*", default=[], metavar="KEY=VALUE")
    commands.add_parser("problems", help="list the known problems")
    add_sandbox_parser(commands)
    for name in PLUGGED_COMMANDS:
        plugged_module(name).add_parser(commands)
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse ``argv``; KEY=VALUE overrides may also come after a command's options
    (``evo export RUN --format sft rl.KEY=VALUE``), not only right after its positionals."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or any(item.startswith("-") or "=" not in item
                                                 for item in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command not in ("run", "resume"):  # those enable it once set up (``entry``)
        gc.enable()
    try:
        if args.command == "run":
            from evoengine.cli.run_cmd import run_command

            return run_command(args.overrides, show_config=args.cfg)
        if args.command == "resume":
            from evoengine.cli.run_cmd import resume_command

            return resume_command(args.run_dir, args.overrides)
        if args.command == "eval":
            from evoengine.cli.eval_cmd import eval_command

            return eval_command(args.overrides)
        if args.command == "sandbox":
            return sandbox_command(args)
        if args.command in PLUGGED_COMMANDS:
            return plugged_module(args.command).command(args)
        from evoengine.cli.problems_cmd import problems_command

        return problems_command()
    except KeyboardInterrupt:  # Ctrl-C before a search runs (during start-up, say):
        # what was stored stays; a search in progress stops on its own, without this
        print("evo: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `evo problems | head`: the reader left, nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        if not is_user_error(exc):
            raise
        print(f"evo: error: {shown(str(exc))}", file=sys.stderr)  # it may quote a server
        return 2


if __name__ == "__main__":
    sys.exit(main())
