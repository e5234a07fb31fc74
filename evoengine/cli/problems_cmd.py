"""``evo problems``: one line per known problem."""

from __future__ import annotations

from evoengine.config.compose import discover_problems, load_problem_yaml


def problems_command() -> int:
    problems = discover_problems()
    if not problems:
        print("no problems found (looked in ./problems and the engine's problems/)")
        return 0
    width = max(len(name) for name in problems)
    for name, folder in sorted(problems.items()):
        node = load_problem_yaml(folder)
        summary = (str(node.description).strip().splitlines() or ["(no description)"])[0]
        print(f"{name:<{width}}  {summary}  [{folder}]")
    return 0
