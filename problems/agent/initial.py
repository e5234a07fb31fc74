"""A coding agent for HumanEval, evolved as in the Darwin Goedel Machine.

``solve(task, llm)`` gets a task's ``task_id``, ``prompt`` (a function signature and
docstring) and ``entry_point`` and returns Python source that defines the function;
hidden tests decide whether it passes. ``llm(prompt or messages, temperature=...,
max_tokens=...) -> str`` is the engine's metered model (a limited number of calls
per evaluation). ``improve(own_source, report, llm)`` returns this agent's next
version (whole source) from a report of its last evaluation: ``score``,
``failed_tasks`` and ``feedback``. Only the EVOLVE-BLOCK may change.
"""

# EVOLVE-BLOCK-START
import re

FENCE = "`" * 3  # spelt out, so that this source holds no fence of its own
SYSTEM = ("You are an expert Python programmer. Complete the function so that it is "
          "correct for every input its docstring allows. Reply with one fenced Python "
          "code block holding the whole function (its imports included), nothing else.")


def extract_code(reply: str) -> str:
    """The first fenced code block of ``reply`` (the whole reply if there is none)."""
    match = re.search(FENCE + r"(?:python|py)?[ \t]*\n(.*?)" + FENCE, reply, re.DOTALL)
    return (match.group(1) if match else reply).strip("\n") + "\n"


def solve(task: dict, llm) -> str:
    reply = llm([{"role": "system", "content": SYSTEM},
                 {"role": "user", "content": task["prompt"]}], temperature=0.2)
    code = extract_code(reply)
    imports = [line for line in task["prompt"].splitlines()
               if line.startswith(("import ", "from "))]
    if f"def {task['entry_point']}(" not in code:  # a body only: complete the prompt
        return task["prompt"] + code
    return "\n".join(imports) + "\n\n" + code


IMPROVE = ("You are improving a coding agent that solves Python tasks with a language "
           "model. Its source and its last evaluation follow. Rewrite the code between "
           "the EVOLVE-BLOCK markers to solve more tasks (better prompts, checking its "
           "own answers, retries). Keep solve(task, llm) and improve(own_source, report, "
           "llm). Reply with one fenced Python code block holding the new block's code only.")


def improve(own_source: str, report: dict, llm) -> str:
    start = own_source.index("# EVOLVE-BLOCK-" + "START")
    end = own_source.index("# EVOLVE-BLOCK-" + "END")
    head = own_source[:own_source.index("\n", start) + 1]
    message = (f"{IMPROVE}\n\nScore: {report.get('score')}\n"
               f"Failed tasks: {', '.join(report.get('failed_tasks', [])[:30])}\n"
               f"Feedback:\n{report.get('feedback', '')}\n\nSource:\n{FENCE}python\n"
               f"{own_source}{FENCE}")
    body = extract_code(llm(message, temperature=0.7))
    for marker in ("# EVOLVE-BLOCK-" + "START", "# EVOLVE-BLOCK-" + "END"):
        body = "".join(line for line in body.splitlines(True) if line.strip() != marker)
    return head + body + own_source[end:]
# EVOLVE-BLOCK-END
