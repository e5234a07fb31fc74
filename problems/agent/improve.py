"""The ``agent`` problem's self-modification harness (``mutation.self_modify=true``).

Runs in the sandbox with the parent agent as the candidate; the report of the
parent's last evaluation (``{"source", "score", "metrics", "feedback"}``) comes as
JSON in ``$EVOENGINE_IMPROVE_REPORT``, and ``failed_tasks`` (the task ids the
feedback names) is added here. It calls the agent's own ``improve(own_source, report, llm)`` and
returns what that returns: the child's full source (the engine checks that only the
EVOLVE-BLOCK changed). ``llm`` is the metered model proxy, as in ``harness.py``.
"""

from __future__ import annotations

import json
import os
import re
from types import ModuleType

import evo_llm

MAX_SOURCE_CHARS = 200_000


def run(agent: ModuleType, instances: list) -> dict:
    report = json.loads(os.environ["EVOENGINE_IMPROVE_REPORT"])
    source = report.pop("source")
    failed = re.search(r"^failed: (.*)$", str(report.get("feedback", "")), re.MULTILINE)
    report["failed_tasks"] = re.findall(r"HumanEval/\d+", failed.group(1)) if failed else []
    llm = evo_llm.connect()
    improve = getattr(agent, "improve", None)
    if not callable(improve):
        return {"source": None, "error": "the agent defines no improve(own_source, report, llm)"}
    new_source = improve(source, report, llm)
    if not isinstance(new_source, str):
        return {"source": None,
                "error": f"improve() returned {type(new_source).__name__}, not source code"}
    return {"source": new_source[:MAX_SOURCE_CHARS], "error": ""}
