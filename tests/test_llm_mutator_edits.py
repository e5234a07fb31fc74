"""Where the LLM mutator applies a reply (evoengine/mutation/llm_mutator.py). A reply of
thousands of SEARCH/REPLACE blocks against a long program takes seconds of CPU (a
200,000-character reply of one-line blocks: 12 s); applied on the event loop, it stalled
every other model call and evaluation of the run meanwhile."""

from __future__ import annotations

import asyncio
import random
import threading

import pytest

from evoengine.config.llm_schema import EditProbabilities, LLMConfig
from evoengine.llm.types import Completion
from evoengine.mutation import llm_mutator
from evoengine.mutation.llm_mutator import INLINE_EDIT_CHARS, LLMMutator
from evoengine.mutation.prompts import PromptBuilder
from evoengine.mutation.types import Child, ParentView

PARENT = ("# EVOLVE-BLOCK-START\ndef f():\n" + "    x = 1\n" * 1000
          + "    return x\n# EVOLVE-BLOCK-END\n")
BLOCK = "<<<<<<< SEARCH\n    x = 1\n=======\n    x = 2\n>>>>>>> REPLACE\n"


class OneReply:
    """A model client (a test double: no model here) that answers ``text``."""

    model = "fixed"

    def __init__(self, text: str) -> None:
        self.text = text

    async def complete(self, messages: list[dict[str, str]], *, temperature: float,
                       max_tokens: int, seed: int | None = None) -> Completion:
        return Completion(text=self.text, model=self.model)

    async def close(self) -> None:
        pass


def propose(reply: str, monkeypatch: pytest.MonkeyPatch, parent_code: str = PARENT
            ) -> tuple[Child, dict[str, str]]:
    """One diff proposal answered by ``reply``; the thread the edit and the diff each
    ran on."""
    threads: dict[str, str] = {}

    def watched(work):
        def run(*args: str):
            threads[work.__name__] = threading.current_thread().name
            return work(*args)
        return run

    monkeypatch.setattr(llm_mutator, "apply_search_replace",
                        watched(llm_mutator.apply_search_replace))
    monkeypatch.setattr(llm_mutator, "diff_summary", watched(llm_mutator.diff_summary))
    config = LLMConfig(edit_probabilities=EditProbabilities(diff=1.0, full=0.0, crossover=0.0))
    mutator = LLMMutator(OneReply(reply), config, PromptBuilder("p", "pack"))
    parent = ParentView(program_id=1, code=parent_code, score=0.0)
    child = asyncio.run(mutator.propose(parent, [], "", random.Random(0)))
    assert child is not None
    return child, threads


def test_a_long_reply_is_applied_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    reply = BLOCK * (INLINE_EDIT_CHARS // len(BLOCK) + 1)
    child, threads = propose(reply, monkeypatch)
    assert child.outcome == "applied" and child.code.count("x = 2") == len(reply) // len(BLOCK)
    assert threads["apply_search_replace"] != threading.main_thread().name
    # the parent and the child are 20,000 characters together: diffed inline
    assert threads["diff_summary"] == threading.main_thread().name


def test_a_short_reply_is_applied_inline(monkeypatch: pytest.MonkeyPatch) -> None:
    child, threads = propose(BLOCK, monkeypatch)
    assert child.outcome == "applied" and child.code.count("x = 2") == 1
    assert set(threads.values()) == {threading.main_thread().name}


def test_a_long_program_is_edited_and_diffed_off_the_event_loop(
        monkeypatch: pytest.MonkeyPatch) -> None:
    long_parent = PARENT.replace("    x = 1\n" * 1000, "    x = 1\n" * 6000)
    child, threads = propose(BLOCK, monkeypatch, long_parent)
    assert child.outcome == "applied" and child.edit.startswith("--- parent")
    assert threading.main_thread().name not in threads.values()
