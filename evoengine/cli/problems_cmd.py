"""``evo problems``: one line per known problem.

Known problems are the folders under ``./problems`` and the engine's ``problems/``
with a ``problem.yaml`` or in OpenEvolve's format (``initial_program.py`` +
``evaluator.py``). A folder that does not load is listed with the reason instead of
stopping the listing.
"""

from __future__ import annotations

from pathlib import Path

from evoengine.config.problem_folders import discover_problems, load_problem_yaml
from evoengine.errors import UserError

_SUMMARY_CHARS = 90


def problem_line(name: str, folder: Path, width: int) -> str:
    """``name  first line of the description  [splits; kind]  folder``."""
    try:
        node = load_problem_yaml(folder)
    except (UserError, ValueError) as exc:
        return f"{name:<{width}}  (cannot load: {str(exc).splitlines()[0]})  [{folder}]"
    summary = (str(node.description).strip().splitlines() or ["(no description)"])[0]
    if len(summary) > _SUMMARY_CHARS:
        summary = summary[:_SUMMARY_CHARS - 3] + "..."
    tags = [",".join(node.splits)]
    if not node.trusted_score:
        tags.append("OpenEvolve format, untrusted score")
    return f"{name:<{width}}  {summary}  [{'; '.join(tags)}]  {folder}"


def problems_command() -> int:
    problems = discover_problems()
    if not problems:
        print("no problems found (looked in ./problems and the engine's problems/)")
        return 0
    width = max(len(name) for name in problems)
    for name, folder in sorted(problems.items()):
        print(problem_line(name, folder, width))
    return 0
