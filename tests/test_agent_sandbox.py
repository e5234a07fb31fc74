"""The ``agent`` problem's evaluation: hidden tests, the metered model proxy, the cap,
and what an agent cannot reach from inside the sandbox.

The model is the scripted OpenAI-protocol server (evoengine.llm.scripted_server), a
test double standing in for a model, which cannot run here; the agent reaches it only
through the engine's proxy, over the real sandbox backends.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from pathlib import Path

import pytest

from evoengine.config.compose import load_run_config
from evoengine.config.llm_schema import LLMConfig
from evoengine.evaluation.evaluator import Evaluator
from evoengine.evaluation.problem import Problem
from evoengine.evaluation.sandbox.base import Limits
from evoengine.evaluation.sandbox.process import ProcessSandbox
from evoengine.llm.openai_client import OpenAIClient
from evoengine.llm.sandbox_proxy import SandboxLLMProxy
from evoengine.llm.scripted_server import ScriptedServer, malformed
from evoengine.paths import resource_dir
from tests.conftest import unavailable

DATA = resource_dir("problems") / "agent" / "data" / "HumanEval.jsonl.gz"
TASKS = [json.loads(line) for line in gzip.decompress(DATA.read_bytes()).decode().splitlines()]
BY_PROMPT = {task["prompt"]: task for task in TASKS}
WRONG, MALFORMED = {1}, {3}  # task numbers answered wrongly / with an unusable reply


def humaneval_script(request: dict) -> object:
    """Replies to an agent's solve() call: the reference solution for most tasks, a
    wrong function for WRONG, an unusable reply for MALFORMED."""
    task = BY_PROMPT.get(request["messages"][-1]["content"])
    if task is None:
        return "no task in this prompt"
    number = int(task["task_id"].split("/")[1])
    if number in WRONG:
        return f"```python\ndef {task['entry_point']}(*args):\n    return None\n```"
    if number in MALFORMED:
        return malformed("no_choices")
    return f"```python\n{task['prompt']}{task['canonical_solution']}```"


def agent_config(*overrides: str):
    config, _ = load_run_config(["problem=agent", "problem.splits.train.spec.count=6",
                                 "problem.cascade=[]", *overrides])
    return config


async def evaluate(code: str, server: ScriptedServer, backend, max_calls: int = 50,
                   *overrides: str):
    config = agent_config(*overrides)
    client = OpenAIClient(LLMConfig(base_url=server.base_url, model=server.model,
                                    max_retries=0, timeout_s=5, price_input_per_mtok=1.0,
                                    price_output_per_mtok=2.0))
    proxy = SandboxLLMProxy(client, max_calls=max_calls, max_tokens=0, temperature=0.2,
                            reply_tokens=1000)
    evaluator = Evaluator(Problem(config.problem), backend,
                          Limits(timeout_s=120, cpu_s=60, memory_mb=1024), proxy)
    try:
        return await evaluator.evaluate(code)
    finally:
        await backend.close()
        await proxy.close()
        await client.close()


def probing_agent(port: int) -> str:
    """The seed agent, plus a probe on its first task that tries the network, the
    hidden test data, and any test text in what solve() is given; it prints what it
    found on stderr (which comes back in the evaluation's feedback)."""
    seed = (resource_dir("problems") / "agent" / "initial.py").read_text()
    probe = f'''
import os as _os
import socket as _socket
import sys as _sys


def _probe(task):
    found = []
    try:
        _socket.create_connection(("127.0.0.1", {port}), timeout=2).close()
        found.append("net:open")
    except OSError:
        found.append("net:blocked")
    try:
        with open({str(DATA)!r}, "rb") as f:
            found.append("data:read" if f.read(10) else "data:empty")
    except OSError:
        found.append("data:blocked")
    found.append("tests:seen" if "test" in task or "check(" in task["prompt"]
                 else "tests:unseen")
    print("PROBE " + " ".join(found), file=_sys.stderr)


_plain_solve = solve


def solve(task, llm):
    if task["task_id"] == "HumanEval/0":
        _probe(task)
    return _plain_solve(task, llm)
'''
    return seed.replace("# EVOLVE-BLOCK-END", probe + "# EVOLVE-BLOCK-END")


def check_probe_and_score(result, server: ScriptedServer) -> None:
    assert result.valid, result.feedback
    # tasks 0, 2, 4, 5 pass; 1 (wrong answer) and 3 (unusable reply) fail: the hidden
    # tests decided, not anything the agent returned
    assert result.score == pytest.approx(4 / 6)
    assert "HumanEval/1 (assertion failed)" in result.feedback
    assert "HumanEval/3 (no code)" in result.feedback
    assert "PROBE net:blocked data:blocked tests:unseen" in result.feedback
    assert "def check(" not in json.dumps(server.requests)  # no test text reached the model
    assert result.metrics["llm_calls"] == 6
    assert result.metrics["llm_cost"] > 0


def test_hidden_tests_decide_and_the_agent_reaches_only_the_proxy() -> None:
    with ScriptedServer(humaneval_script) as server:
        result = asyncio.run(evaluate(probing_agent(server.port), server,
                                      ProcessSandbox(pool_size=1)))
    check_probe_and_score(result, server)


def test_the_per_evaluation_cap_holds() -> None:
    """Three calls allowed for six tasks: the fourth and later are refused by the
    engine and never reach the model; the refused tasks fail."""
    seed = (resource_dir("problems") / "agent" / "initial.py").read_text()
    with ScriptedServer(humaneval_script) as server:
        result = asyncio.run(evaluate(seed, server, ProcessSandbox(pool_size=1),
                                      max_calls=3))
    assert len(server.requests) == 3
    assert result.metrics["llm_calls"] == 3 and result.metrics["llm_refused"] == 3
    assert result.score == pytest.approx(2 / 6)  # tasks 0 and 2 of the three answered


def test_a_token_works_only_during_its_evaluation(tmp_path: Path) -> None:
    """A token from a finished evaluation is refused (nothing is charged to it)."""
    async def scenario() -> tuple[int, int]:
        with ScriptedServer(["hello"]) as server:
            client = OpenAIClient(LLMConfig(base_url=server.base_url, model=server.model,
                                            max_retries=0))
            proxy = SandboxLLMProxy(client, max_calls=5, max_tokens=0, temperature=0.0,
                                    reply_tokens=10)
            await proxy.start()
            session = proxy.open_session()
            good = await asyncio.to_thread(_call, proxy.socket_path, session.token)
            proxy.close_session(session)
            stale = await asyncio.to_thread(_call, proxy.socket_path, session.token)
            await proxy.close()
            await client.close()
            return good, stale

    good, stale = asyncio.run(scenario())
    assert (good, stale) == (200, 401)


def _call(socket_path: str, token: str) -> int:
    import sys

    sys.path.insert(0, str(resource_dir("sandbox")))
    import evo_llm

    try:
        evo_llm.LLM(socket_path, token, timeout_s=10)("hi")
        return 200
    except evo_llm.LLMUnavailable as exc:
        return 401 if exc.kind == "auth" else 500


@pytest.mark.docker
def test_docker_backend_serves_the_proxy_and_hides_the_rest() -> None:
    from evoengine.evaluation.sandbox.docker_sandbox import (
        DockerSandbox,
        docker_unavailable_reason,
    )

    reason = docker_unavailable_reason()
    if reason is not None:
        unavailable(reason)
    with ScriptedServer(humaneval_script) as server:
        result = asyncio.run(evaluate(probing_agent(server.port), server,
                                      DockerSandbox(pool_size=1)))
    check_probe_and_score(result, server)
