"""The `agent` problem against hostile code: completions that attack the
grader, hostile clients against the model proxy, hostile improve() output."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

from evoengine.config.compose import load_run_config
from evoengine.evaluation.evaluator import Evaluator
from evoengine.evaluation.problem import Problem
from evoengine.evaluation.sandbox.base import Limits
from evoengine.evaluation.sandbox.process import ProcessSandbox
from evoengine.llm.reply_guard import ReplyGuard
from evoengine.llm.sandbox_proxy import SandboxLLMProxy
from evoengine.llm.types import Completion
from evoengine.paths import resource_dir

# Each task's "completion": task 0 writes a pass report into every pipe it inherited
# (the grader's own and the sandbox's result pipe) and exits; task 1 fails with an
# exception whose name carries text of its choosing (its own hidden test, say).
HOSTILE_AGENT = '''
FORGE = """
import os, stat
for fd in range(3, 1024):
    try:
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            os.write(fd, b"P")
    except OSError:
        pass
os._exit(0)
"""
LEAK = "raise type('LEAKED_assert_candidate_1_eq_2', (Exception,), {})()"


def solve(task, llm):
    return FORGE if task["task_id"] == "HumanEval/0" else LEAK
'''


def _agent(block: str) -> str:
    seed = (resource_dir("problems") / "agent" / "initial.py").read_text()
    start, end = seed.index("# EVOLVE-BLOCK-START"), seed.index("# EVOLVE-BLOCK-END")
    return seed[:seed.index("\n", start) + 1] + block + seed[end:]


async def _evaluate(code: str):
    config, _ = load_run_config(["problem=agent", "problem.splits.train.spec.count=2",
                                 "problem.cascade=[]"])
    backend = ProcessSandbox(pool_size=1)
    evaluator = Evaluator(Problem(config.problem), backend,
                          Limits(timeout_s=60, cpu_s=30, memory_mb=1024))
    try:
        return await evaluator.evaluate(code)
    finally:
        await backend.close()


def test_a_completion_cannot_forge_a_pass_or_leak_text_into_feedback() -> None:
    result = asyncio.run(_evaluate(_agent(HOSTILE_AGENT)))
    assert result.valid, result.feedback  # the sandbox's result pipe was out of reach
    assert result.score == 0.0  # a bare "P" on the grader's pipe is no pass
    assert "LEAKED" not in result.feedback
    assert "HumanEval/1 (crashed)" in result.feedback


def test_a_failing_completion_still_names_its_builtin_exception(tmp_path: Path) -> None:
    block = 'def solve(task, llm):\n    return "raise ValueError(1)"\n'
    result = asyncio.run(_evaluate(_agent(block)))
    assert result.valid and result.score == 0.0
    assert "HumanEval/0 (ValueError)" in result.feedback


class _HeldModel:
    """A model whose replies wait until released; records the calls it saw end."""

    model = "held"

    def __init__(self) -> None:
        self.started = 0
        self.cancelled = 0
        self.release = asyncio.Event()

    async def complete(self, messages, temperature: float, max_tokens: int):
        self.started += 1
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return Completion(text="late", model=self.model, prompt_tokens=100,
                          completion_tokens=100, cost=1.0)


def _request(token: str) -> bytes:
    body = b'{"messages": [{"role": "user", "content": "hi"}]}'
    return (f"POST /v1/complete HTTP/1.1\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def _serving(model: Any, max_calls: int, max_tokens: int, reply_tokens: int
                   ) -> tuple[SandboxLLMProxy, Any]:
    """A started proxy for ``model`` and one open session on it."""
    proxy = SandboxLLMProxy(model, max_calls=max_calls, max_tokens=max_tokens,
                            temperature=0.0, reply_tokens=reply_tokens)
    await proxy.start()
    return proxy, proxy.open_session()


def _send_request(socket_path: str, token: str) -> socket.socket:
    """A connection to the proxy at ``socket_path`` with one request sent on it."""
    conn = socket.socket(socket.AF_UNIX)
    conn.connect(socket_path)
    conn.sendall(_request(token))
    return conn


def _reply(conn: socket.socket) -> bytes:
    conn.settimeout(30)
    data = b""
    while chunk := conn.recv(65536):
        data += chunk
    return data


def test_silent_clients_are_dropped_and_cannot_crowd_the_proxy_out() -> None:
    from evoengine.llm import sandbox_proxy

    async def scenario() -> list[bytes]:
        proxy = SandboxLLMProxy(_HeldModel(), max_calls=5, max_tokens=0, temperature=0.0,
                                reply_tokens=10)
        proxy.read_timeout_s = 0.5
        await proxy.start()
        try:
            def silent() -> list[bytes]:
                conns = []
                for _ in range(sandbox_proxy._MAX_CONNECTIONS + 5):
                    conn = socket.socket(socket.AF_UNIX)
                    conn.connect(proxy.socket_path)
                    conns.append(conn)
                replies = [_reply(conn) for conn in conns]  # each answered, none hangs
                for conn in conns:
                    conn.close()
                return replies

            return await asyncio.to_thread(silent)
        finally:
            await proxy.close()

    replies = asyncio.run(scenario())
    assert all(r.startswith(b"HTTP/1.1 ") for r in replies)
    assert sum(b" 503 " in r for r in replies) >= 5
    assert any(b" 400 " in r for r in replies)  # the silent ones timed out


def test_a_call_in_flight_when_its_evaluation_ends_is_cancelled() -> None:
    async def scenario():
        model = _HeldModel()
        proxy, session = await _serving(model, max_calls=5, max_tokens=0, reply_tokens=10)
        conn = _send_request(proxy.socket_path, session.token)
        while model.started == 0:
            await asyncio.sleep(0.01)
        proxy.close_session(session)
        reply = await asyncio.to_thread(_reply, conn)
        conn.close()
        model.release.set()  # too late: nothing may be added to the closed session
        await asyncio.sleep(0.05)
        await proxy.close()
        return model, session, reply

    model, session, reply = asyncio.run(scenario())
    assert model.cancelled == 1
    assert b" 410 " in reply
    assert session.calls == 1 and session.tokens == 0 and session.cost == 0.0


def test_improve_returning_unencodable_source_is_a_malformed_child() -> None:
    """A lone surrogate survives the sandbox's JSON; stored or hashed it would crash
    the controller, so the step is recorded as malformed instead."""
    import random

    from evoengine.archive.records import code_hash
    from evoengine.mutation.self_modify import SelfModifyMutator
    from evoengine.mutation.types import ParentView

    block = ('def solve(task, llm):\n    return ""\n\n\n'
             'def improve(own_source, report, llm):\n'
             '    return own_source.replace("return \\"\\"", "return \'" + chr(0xD800) + "\'")\n')
    parent = _agent(block)

    async def scenario():
        config, _ = load_run_config(["problem=agent", "problem.splits.train.spec.count=1",
                                     "problem.cascade=[]"])
        backend = ProcessSandbox(pool_size=1)
        proxy = SandboxLLMProxy(_HeldModel(), max_calls=5, max_tokens=0, temperature=0.0,
                                reply_tokens=10)
        evaluator = Evaluator(Problem(config.problem), backend,
                              Limits(timeout_s=60, cpu_s=30, memory_mb=1024), proxy)
        mutator = SelfModifyMutator(evaluator)
        try:
            return await mutator.propose(ParentView(1, parent, 0.5), [], "", random.Random(0))
        finally:
            await mutator.close()
            await backend.close()

    child = asyncio.run(scenario())
    assert child.outcome == "malformed", child.message
    assert "surrogate" in child.message
    code_hash(child.code)  # what the controller does next must not raise


class _FillingModel(_HeldModel):
    """A held model whose reply fills the max_tokens each call was given."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[int] = []

    async def complete(self, messages, temperature: float, max_tokens: int):
        self.asked.append(max_tokens)
        self.started += 1
        await self.release.wait()
        return Completion(text="x" * max_tokens, model=self.model, prompt_tokens=0,
                          completion_tokens=max_tokens, cost=0.0)


def test_concurrent_calls_share_the_token_cap_instead_of_each_taking_it() -> None:
    """Three calls at once under a 100-token cap, 60 tokens per reply at most: the
    first may fill 60, the second the 40 left, the third is turned away, and the
    session ends at the cap (without the reservation each got 60: 180 tokens)."""

    async def scenario():
        model = _FillingModel()
        proxy, session = await _serving(model, max_calls=10, max_tokens=100, reply_tokens=60)
        conns = []
        for expected_started in (1, 2):
            conns.append(_send_request(proxy.socket_path, session.token))
            while model.started < expected_started:
                await asyncio.sleep(0.01)
        third = _send_request(proxy.socket_path, session.token)
        refused = await asyncio.to_thread(_reply, third)
        third.close()
        model.release.set()
        replies = [await asyncio.to_thread(_reply, conn) for conn in conns]
        for conn in conns:
            conn.close()
        await proxy.close()
        return model, session, replies, refused

    model, session, replies, refused = asyncio.run(scenario())
    assert model.asked == [60, 40]
    assert all(b" 200 " in reply for reply in replies)
    assert b" 429 " in refused and b"calls in flight included" in refused
    assert session.tokens == 100 and session.reserved == 0
    assert session.calls == 2 and session.refused == 1


class _EndlessModel:
    """A model that never stops: every reply is 5,000 characters of 900 tokens."""

    model = "endless"

    async def complete(self, messages, temperature: float, max_tokens: int,
                       seed: int | None = None) -> Completion:
        return Completion(text="y" * 5000, model=self.model, prompt_tokens=10,
                          completion_tokens=900, cost=0.25)

    async def close(self) -> None:
        pass


def test_an_over_long_reply_fails_but_its_tokens_count_against_the_session() -> None:
    """The agent gets an error for a reply over llm.max_reply_chars, and the session's
    token cap and cost still see what the reply took."""

    async def scenario():
        capped = ReplyGuard(_EndlessModel(), max_chars=1000)
        proxy, session = await _serving(capped, max_calls=10, max_tokens=1000,
                                        reply_tokens=900)
        conn = _send_request(proxy.socket_path, session.token)
        answer = await asyncio.to_thread(_reply, conn)
        conn.close()
        await proxy.close()
        return session, answer

    session, answer = asyncio.run(scenario())
    assert b" 502 " in answer and b"llm.max_reply_chars=1,000" in answer
    assert session.failed == 1 and session.tokens == 910 and session.cost == 0.25
