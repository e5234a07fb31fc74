"""``evo new-problem NAME [--dir DIR]``: scaffold a problem folder that runs at once."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "new-problem", help="scaffold problems/NAME/ with a working seed, scorer and tests",
        description="Create DIR/NAME/ (DIR defaults to ./problems) with problem.yaml, "
                    "initial.py, harness.py, score.py, data/ and a test file. "
                    "See docs/writing-a-problem.md.")
    parser.add_argument("name", metavar="NAME", help="lowercase letters, digits and _")
    parser.add_argument("--dir", default="problems", metavar="DIR",
                        help="the folder to create NAME/ in (default: ./problems)")


def command(args: argparse.Namespace) -> int:
    from evoengine.authoring.scaffold import scaffold_problem
    from evoengine.terminal import command_line

    folder = scaffold_problem(args.name, Path(args.dir))
    problem = args.name if Path(args.dir) == Path("problems") else str(folder)
    print(f"created {folder}/: problem.yaml, initial.py, harness.py, score.py, data/, "
          f"test_{args.name}.py")
    print("try it:")
    print("  " + command_line("evo", "eval", f"problem={problem}",
                              f"program={folder / 'initial.py'}"))
    print("  " + command_line("evo", "run", f"problem={problem}", "llm=gp",
                              "search.max_evaluations=20"))
    print("  " + command_line("python", "-m", "pytest", folder / f"test_{args.name}.py"))
    print("then replace the task: docs/writing-a-problem.md walks through each file")
    return 0
