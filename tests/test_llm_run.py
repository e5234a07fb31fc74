"""`evo run ... llm=openai` end to end against a real local HTTP server.

The scripted server (evoengine.llm.scripted_server) is a test double standing in for a
model, which cannot be reached here; the requests go through the real `openai` SDK.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from pathlib import Path

from evoengine.llm.scripted_server import ScriptedServer, drop, error, flood, malformed, reply
from tests.conftest import archive_rows

BASE = ["problem=bin_packing_quick", "llm=openai", "ui=plain", "sandbox=process",
        "search.num_islands=2", "search.llm_concurrency=1", "search.eval_concurrency=1",
        "llm.backoff_s=0.01", "llm.max_retries=1", "llm.timeout_s=2",
        "llm.price_input_per_mtok=1.0", "llm.price_output_per_mtok=2.0"]


def _diff(factor: int) -> str:
    return (f"Scale the leftover space.\n<<<<<<< SEARCH\n    return -(bins - item)\n=======\n"
            f"    return -(bins - item) * {factor}\n>>>>>>> REPLACE\n")


def _full(exponent: int) -> str:
    return ("```python\n# EVOLVE-BLOCK-START\ndef priority(item, bins):\n"
            f"    return -((bins - item) ** {exponent})\n# EVOLVE-BLOCK-END\n```")


def test_openai_run_records_every_outcome_and_keeps_going(run_evo, tmp_path: Path) -> None:
    """Valid diffs and rewrites, plus every failure mode of the server, in one run."""
    counter = itertools.count(2)

    def script(request: dict) -> dict | str:
        n = next(counter)
        prompt = request["messages"][-1]["content"]
        if "<<<<<<< SEARCH" in prompt or "could not be applied" in prompt:
            steps = [_diff(n), error(429, retry_after=0), error(500), malformed("no_choices"),
                     drop(), "no blocks at all, just prose",
                     "<<<<<<< SEARCH\n    return bins  # not in the program\n=======\n"
                     "    return -bins\n>>>>>>> REPLACE\n",
                     {"reply": _diff(n), "delay": 5},  # slower than llm.timeout_s
                     flood(1000)]  # a body that does not end (1 GB)
            return steps[n % len(steps)]
        return _full(n % 5 + 2)

    with ScriptedServer(script) as server:
        result = run_evo("run", *BASE, f"llm.base_url={server.base_url}", "name=llm",
                         "search.max_evaluations=12", timeout=600)
    assert result.returncode == 0, result.stderr
    assert "scripted" not in result.stderr
    db = tmp_path / "runs" / "llm" / "archive.db"
    outcomes = dict(archive_rows(db, "SELECT outcome, COUNT(*) FROM mutation_calls "
                                     "GROUP BY outcome"))
    assert outcomes.get("applied", 0) >= 11  # the budget was reached through the failures
    assert set(outcomes) - {"applied", "duplicate"}, outcomes  # and failures were recorded
    assert all(re.fullmatch(r"applied|duplicate|noop|unmatched|malformed|rejected|"
                            r"llm_error:\w+", kind) for kind in outcomes)
    rows = archive_rows(db, "SELECT prompt, response, prompt_tokens, completion_tokens, cost,"
                            " operator, model FROM mutation_calls WHERE outcome='applied'")
    for prompt, response, p_tokens, c_tokens, cost, operator, model in rows:
        assert "EVOLVE-BLOCK-START" in prompt and response
        assert p_tokens > 0 and c_tokens > 0
        assert abs(cost - (p_tokens * 1.0 + c_tokens * 2.0) / 1e6) < 1e-12
        assert operator in ("llm:diff", "llm:full", "llm:crossover")
        assert model == "gpt-4o-mini"
    assert archive_rows(db, "SELECT cost FROM runs")[0][0] > 0
    assert len(server.requests) >= 12


# A rewrite whose candidate puts a NUL into its stderr and its own error message.
NUL_CRASH = ("```python\n# EVOLVE-BLOCK-START\ndef priority(item, bins):\n    import sys\n"
             "    sys.stderr.write('nul \\x00 in stderr\\n')\n"
             "    raise ValueError('bad \\x00 value')\n# EVOLVE-BLOCK-END\n```")


def unstorable_script() -> Callable[[dict], str]:
    """Replies that JSON can carry and no store can hold as they are: diffs whose text
    has a lone surrogate or a NUL, and the rewrite above."""
    counter = itertools.count()

    def script(request: dict) -> str:
        n = next(counter)
        if "<<<<<<< SEARCH" not in request["messages"][-1]["content"]:
            return NUL_CRASH
        odd = ["\ud800 lone", "nul \x00 here"][n % 2]
        return (f"Here {odd}.\n<<<<<<< SEARCH\n    return -(bins - item)\n=======\n"
                f"    return -(bins - item) * {n + 2}  # {odd}\n>>>>>>> REPLACE\n")

    return script


def run_with_unstorable_replies(run_evo, *db: str) -> None:
    """A run on replies and candidate output with NUL and lone surrogates ends well
    (a lone surrogate took it down on any database, a NUL on PostgreSQL)."""
    with ScriptedServer(unstorable_script()) as server:
        result = run_evo("run", *BASE, f"llm.base_url={server.base_url}", "name=odd",
                         "search.max_evaluations=8", *db, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_replies_and_output_no_store_can_hold_are_stored_with_replacements(
        run_evo, tmp_path: Path) -> None:
    run_with_unstorable_replies(run_evo)
    db = tmp_path / "runs" / "odd" / "archive.db"
    codes = [code for (code,) in archive_rows(db, "SELECT code FROM programs")]
    assert any("# \ufffd lone" in code for code in codes)
    assert any("# nul \ufffd here" in code for code in codes)
    feedback = [text for (text,) in archive_rows(db, "SELECT feedback FROM programs "
                                                     "WHERE error = 'crash'")]
    assert feedback and all("bad \ufffd value" in text and "\x00" not in text
                            for text in feedback)

def test_bad_key_stops_at_once_with_one_clear_line(run_evo, tmp_path: Path) -> None:
    with ScriptedServer([error(401)] * 5) as server:
        result = run_evo("run", *BASE, f"llm.base_url={server.base_url}", "name=badkey",
                         "search.max_evaluations=50", timeout=300)
    assert result.returncode == 1  # it was 0: a script could not tell it from a finished run
    assert "run failed: the model cannot be used" in result.stdout
    assert "API key" in result.stdout
    db = tmp_path / "runs" / "badkey" / "archive.db"
    assert archive_rows(db, "SELECT status FROM runs") == [("failed",)]
    assert len(server.requests) == 1  # an auth error is not retried nor asked again


def test_unknown_model_is_named(run_evo) -> None:
    with ScriptedServer([error(404)] * 5) as server:
        result = run_evo("run", *BASE, f"llm.base_url={server.base_url}", "name=nomodel",
                         "llm.model=no-such-model", "search.max_evaluations=50", timeout=300)
    assert "unknown model 'no-such-model'" in result.stdout


def test_a_servers_error_text_is_shown_as_it_is(run_evo) -> None:
    """The end-of-run line quotes the server's message: a closing tag in it ended the
    run in Rich's MarkupError, and its escape sequences reached the terminal."""
    message = "The model `m[/x]` does not exist \x1b]0;title\x07"
    with ScriptedServer([error(404, message=message)] * 5) as server:
        result = run_evo("run", *BASE, f"llm.base_url={server.base_url}", "name=says",
                         "search.max_evaluations=5", timeout=300)
    assert result.returncode == 1, result.stderr  # a 404: the model cannot be used
    line = next(line for line in result.stdout.splitlines() if line.startswith("run "))
    assert "does not exist \\x1b]0;title\\x07" in line and "`m[/x]`" in line


def test_cost_budget_with_a_priced_model(run_evo, tmp_path: Path) -> None:
    counter = itertools.count(2)
    with ScriptedServer(lambda request: reply(_diff(next(counter)), prompt_tokens=400_000,
                                              completion_tokens=100_000)) as server:
        result = run_evo("run", *BASE, f"llm.base_url={server.base_url}", "name=budget",
                         "search.max_cost=2.0", "search.max_evaluations=100", timeout=300)
    assert result.returncode == 0, result.stderr
    assert "cost budget spent" in result.stdout
    cost = archive_rows(tmp_path / "runs" / "budget" / "archive.db", "SELECT cost FROM runs")
    assert 2.0 <= cost[0][0] < 2.0 + 0.6 * 2  # each call costs $0.60
