"""`evo run problem=agent` end to end: a self-modifying coding agent (Darwin Goedel
Machine style) on a few HumanEval tasks, scored by hidden tests, through the process
sandbox.

The model is the scripted OpenAI-protocol server (evoengine.llm.scripted_server), a
test double standing in for a model, which cannot run here. It answers the agents'
solve() calls (reference solutions, a wrong one, an unusable reply) and their
improve() calls (a weaker agent, an unusable reply, a reworded agent).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from evoengine.llm.scripted_server import ScriptedServer, malformed
from evoengine.paths import resource_dir
from tests.conftest import archive_rows
from tests.test_agent_sandbox import humaneval_script

SEED = (resource_dir("problems") / "agent" / "initial.py").read_text()
BLOCK = SEED.split("# EVOLVE-BLOCK-START\n", 1)[1].split("# EVOLVE-BLOCK-END", 1)[0]
# An agent that answers without asking the model: wrong on every task.
WEAK = BLOCK.replace('    reply = llm([{"role": "system", "content": SYSTEM},',
                     '    return "def nothing():\\n    pass\\n"\n'
                     '    reply = llm([{"role": "system", "content": SYSTEM},')
REWORDED = BLOCK.replace("You are an expert Python programmer.",
                         "You are a careful Python programmer.")
BASE = ["problem=agent", "llm=openai", "ui=plain", "sandbox=process",
        "mutation.self_modify=true", "problem.splits.train.spec.count=6",
        "problem.splits.validation.spec.count=2",
        "problem.cascade=[{instances:2,threshold:0.5},{instances:null}]",
        "search.num_islands=1", "search.llm_concurrency=1", "search.eval_concurrency=1",
        "llm.max_retries=0", "llm.timeout_s=5",
        "llm.price_input_per_mtok=1.0", "llm.price_output_per_mtok=2.0"]


def test_self_modifying_agent_run(run_evo, tmp_path: Path) -> None:
    improvements = itertools.chain([f"```python\n{WEAK}```", malformed("no_choices"),
                                    f"```python\n{REWORDED}```"],
                                   itertools.repeat(malformed("empty_choices")))

    def script(request: dict) -> object:
        if "You are improving a coding agent" in request["messages"][-1]["content"]:
            return next(improvements)
        return humaneval_script(request)

    with ScriptedServer(script) as server:
        result = run_evo("run", *BASE, f"llm.base_url={server.base_url}", "name=agent",
                         "search.max_evaluations=3", timeout=600)
        requests = len(server.requests)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "model proxy" in result.stdout
    db = tmp_path / "runs" / "agent" / "archive.db"
    evaluated = archive_rows(db, """
        SELECT p.operator, p.score, e.stage, p.metrics, p.feedback FROM programs p
        JOIN evaluations e ON e.program_id = p.id WHERE e.split = 'train' ORDER BY p.id""")
    (seed, weak, reworded) = evaluated
    # The seed: hidden tests pass tasks 0, 2, 4, 5 and fail 1 (wrong) and 3 (unusable
    # reply); it cleared stage 1 (1 of 2 tasks >= 0.5) and reached stage 2 (all six).
    assert seed[:3] == ("initial", pytest.approx(4 / 6), 1)
    assert "HumanEval/1" in seed[4] and "HumanEval/3" in seed[4]
    # The weaker agent improve() produced was stopped by the cascade after stage 1.
    assert weak[:3] == ("self_modify", 0.0, 0)
    assert "cascade: stopped after stage 1" in weak[4]
    assert json.loads(weak[3])["llm_calls"] == 0
    # A reworded agent solves as the seed does, on all six tasks.
    assert reworded[:3] == ("self_modify", pytest.approx(4 / 6), 1)
    assert json.loads(reworded[3])["llm_calls"] == 8  # 2 (stage 1) + 6 (stage 2)
    outcomes = archive_rows(db, "SELECT operator, outcome, edit FROM mutation_calls "
                                "ORDER BY step")
    assert [o[:2] for o in outcomes] == [("self_modify", "applied"),
                                        ("self_modify", "malformed"),
                                        ("self_modify", "applied")]
    assert "improve" in outcomes[1][2] or "model call refused" in outcomes[1][2]
    # Every model call, the agents' and improve()'s, is recorded and charged to the run.
    calls, cost = archive_rows(db, "SELECT COUNT(*), SUM(cost) FROM llm_calls")[0]
    assert calls == requests
    run_cost = archive_rows(db, "SELECT cost FROM runs")[0][0]
    assert run_cost > 0 and run_cost == pytest.approx(cost)
    # The end-of-run validation of the best programs (2 tasks each) is charged too.
    validation_calls = sum(json.loads(m)["llm_calls"] for (m,) in archive_rows(
        db, "SELECT metrics FROM evaluations WHERE split = 'validation'"))
    assert validation_calls > 0
    steps = [row[0] for row in archive_rows(db, "SELECT step FROM llm_calls")]
    # the seed's evaluation comes before any step, the validations after the last
    assert steps.count(None) == 8 + validation_calls
    assert set(steps) - {None} == {0, 1, 2}  # the rest are tagged with their step


def test_agent_problem_without_a_model_stops_at_once(run_evo, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    for llm in ("llm=gp", "llm=auto"):
        result = run_evo("run", "problem=agent", llm, "ui=plain", "name=nomodel",
                         timeout=120)
        assert result.returncode == 2
        message = result.stderr.strip().splitlines()
        assert len(message) == 1 and message[0].startswith("evo: error:")
        assert "llm=openai llm.base_url=" in message[0]
        assert not (tmp_path / "runs" / "nomodel").exists()


def test_evo_eval_gives_the_agent_the_metered_proxy(run_evo, tmp_path: Path) -> None:
    """`evo eval problem=agent` serves the model to the agent as a run does: the seed
    scores by the hidden tests on the scripted replies (4 of 6 tasks right)."""
    seed = tmp_path / "agent.py"
    seed.write_text(SEED)
    with ScriptedServer(humaneval_script) as server:
        result = run_evo("eval", "problem=agent", f"program={seed}", "llm=openai",
                         f"llm.base_url={server.base_url}", "sandbox=process",
                         "problem.splits.train.spec.count=6", "problem.cascade=[]",
                         "llm.max_retries=0", "llm.timeout_s=5", timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "model proxy: candidates call" in result.stdout
    score = next(line for line in result.stdout.splitlines() if line.startswith("score"))
    assert float(score.split()[1]) == pytest.approx(4 / 6)
