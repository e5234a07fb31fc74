"""The ``agent`` problem's candidate harness (runs in the sandbox).

For each task it calls the agent's ``solve(task, llm)`` and collects the returned
source code: raw output only. The task is the public view (``task_id``, ``prompt``,
``entry_point``); the hidden tests never reach this process, and ``grader.py`` runs
them in a sandbox call of its own. ``llm`` is the engine's metered model proxy
(``evo_llm``, beside the sandbox runner): ``llm(prompt or messages, temperature=,
max_tokens=) -> str``, raising ``evo_llm.LLMUnavailable`` once the evaluation's cap is
used up or the model fails.
"""

from __future__ import annotations

from types import ModuleType

import evo_llm

MAX_CODE_CHARS = 50_000


class _NoModel:
    """Stands in when this evaluation has no proxy: every call fails, clearly."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __call__(self, *args: object, **kwargs: object) -> str:
        raise evo_llm.LLMUnavailable("auth", self.reason)


def run(agent: ModuleType, instances: list) -> list:
    try:
        llm = evo_llm.connect()
    except evo_llm.LLMUnavailable as exc:
        llm = _NoModel(str(exc))
    results = []
    for task in instances:
        entry = {"task_id": task["task_id"], "code": None, "error": ""}
        try:
            code = agent.solve(dict(task), llm)
            if isinstance(code, str):
                entry["code"] = code[:MAX_CODE_CHARS]
            else:
                entry["error"] = f"solve() returned {type(code).__name__}, not source code"
        except Exception as exc:  # one task's failure is that task's, not the run's
            entry["error"] = f"{type(exc).__name__}: {exc}"[:300]
        results.append(entry)
    return results
