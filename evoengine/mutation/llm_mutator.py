"""The ``Mutator`` that asks a language model for an edit of the parent.

Per proposal it draws an edit kind (``llm.edit_probabilities``: SEARCH/REPLACE diff,
full rewrite of the EVOLVE-BLOCK, or crossover with a second parent), renders that
kind's prompt, calls the model and applies the reply. A diff whose SEARCH text does not
match goes back to the model once, with the error and the nearest match. Every outcome
comes back as a ``Child`` (only ``applied`` ones are evaluated), carrying the prompt,
the replies, tokens, latency and cost, so the archive records all of it. A model call
that fails for good (after the client's retries) is an ``llm_error`` outcome: the run
goes on.

Several models: the mutator holds a :class:`~evoengine.llm.ensemble.ModelEnsemble`
(one model is an ensemble of one) that picks the client of each proposal; the
controller reports each step's result back through :meth:`LLMMutator.observe`.
"""

from __future__ import annotations

import asyncio
import random
import weakref
from collections.abc import Callable
from typing import TypeVar

from evoengine.config.llm_schema import LLMConfig
from evoengine.llm.ensemble import ModelCall, ModelEnsemble
from evoengine.llm.types import Completion, LLMClient, LLMError
from evoengine.mutation.edits import (
    EditResult,
    apply_full_rewrite,
    apply_search_replace,
    diff_summary,
)
from evoengine.mutation.prompts import EDIT_KINDS, PromptBuilder
from evoengine.mutation.types import Child, ParentView

_T = TypeVar("_T")
# A reply and program this long (characters together) are edited and diffed in a worker
# thread: thousands of SEARCH/REPLACE blocks against a long program take seconds of CPU
# (a 200,000-character reply of one-line blocks: 12 s), which on the event loop would
# stall every other model call and evaluation. Shorter ones, nearly all, stay inline.
INLINE_EDIT_CHARS = 50_000


async def _off_loop_if_long(size: int, work: Callable[..., _T], *args: str) -> _T:
    if size <= INLINE_EDIT_CHARS:
        return work(*args)
    return await asyncio.to_thread(work, *args)


class LLMMutator:
    """Mutator backed by one ``LLMClient`` or a ``ModelEnsemble`` of them."""

    def __init__(self, client: LLMClient | ModelEnsemble, config: LLMConfig,
                 prompts: PromptBuilder) -> None:
        self.ensemble = (client if isinstance(client, ModelEnsemble)
                         else ModelEnsemble.of_one(client))
        self.config = config
        self.prompts = prompts
        weights = config.edit_probabilities
        self._kinds = [kind for kind in EDIT_KINDS if getattr(weights, kind) > 0]
        self._weights = [getattr(weights, kind) for kind in self._kinds]
        # the model chosen for a step by ``plan``, by the step's random stream
        self._planned: weakref.WeakKeyDictionary[random.Random, int] = (
            weakref.WeakKeyDictionary())

    @property
    def name(self) -> str:
        return self.ensemble.name

    @property
    def client(self) -> LLMClient:
        """The first model's client (the only one without an ensemble)."""
        return self.ensemble.members[0].client

    def observe(self, child: Child, outcome: str, parent_score: float | None,
                child_score: float | None) -> None:
        """Learn from a written step: ``outcome`` as recorded, ``child_score`` only
        when the child was evaluated and is valid."""
        self.ensemble.observe(ModelCall(child.model, parent_score, child_score, child.cost,
                                        outcome))

    def _choose_kind(self, parent: ParentView, inspirations: list[ParentView],
                     rng: random.Random) -> tuple[str, ParentView | None]:
        kind = rng.choices(self._kinds, weights=self._weights, k=1)[0]
        if kind != "crossover":
            return kind, None
        others = [p for p in inspirations if p.code != parent.code]
        if not others:  # nothing to cross with: ask for a rewrite instead
            return "full", None
        return kind, others[-1]  # the last inspirations come from other cells

    def plan(self, rng: random.Random) -> None:
        """Choose the step's model now, when the controller asks for the step (in step
        order), rather than when it gets a model slot: the bandit's choice then does
        not depend on which earlier steps happened to be written by then."""
        self._planned[rng] = self.ensemble.choose(rng)

    async def propose(self, parent: ParentView, inspirations: list[ParentView],
                      feedback: str, rng: random.Random) -> Child | None:
        index = self._planned.pop(rng, None)
        member = self.ensemble.members[self.ensemble.choose(rng) if index is None else index]
        kind, second = self._choose_kind(parent, inspirations, rng)
        prompt = self.prompts.build(kind, parent, inspirations, feedback, second)
        messages = prompt.messages()
        child = Child(code="", operator=f"llm:{kind}", model=member.name,
                      prompt=prompt.as_text(),
                      second_parent_id=second.program_id if second else None)
        seed = rng.randrange(2**31)
        try:
            completion = await self._complete(member.client, messages, seed, child)
            result = await self._apply(kind, parent.code, completion.text)
            if result.outcome == "unmatched":  # one retry with the error and nearest match
                messages += [{"role": "assistant", "content": completion.text},
                             {"role": "user",
                              "content": self.prompts.retry_unmatched(result.message)}]
                child.prompt += f"\n\n[user]\n{messages[-1]['content']}"
                completion = await self._complete(member.client, messages, seed + 1, child)
                result = await self._apply(kind, parent.code, completion.text)
        except LLMError as exc:
            if exc.spent is not None:  # a reply came back but cannot be used
                _account(child, exc.spent)
            elif exc.latency_s is not None:  # the failed call's wait, as recorded
                child.latency_s += exc.latency_s
            child.outcome = f"llm_error:{exc.kind}"
            child.message = str(exc)  # (its text is in llm_calls)
            return child
        child.outcome = result.outcome
        child.message = result.message
        if result.outcome == "applied" and result.code is not None:
            child.code = result.code
            child.edit = await _off_loop_if_long(len(parent.code) + len(result.code),
                                                 diff_summary, parent.code, result.code)
        else:
            child.edit = result.message
        return child

    async def _complete(self, client: LLMClient, messages: list[dict[str, str]], seed: int,
                        child: Child) -> Completion:
        completion = await client.complete(messages, temperature=self.config.temperature,
                                           max_tokens=self.config.max_tokens, seed=seed)
        _account(child, completion)
        return completion

    async def close(self) -> None:
        await self.ensemble.close()

    @staticmethod
    async def _apply(kind: str, code: str, reply: str) -> EditResult:
        apply = apply_search_replace if kind == "diff" else apply_full_rewrite
        return await _off_loop_if_long(len(code) + len(reply), apply, code, reply)


def _account(child: Child, completion: Completion) -> None:
    """Add one reply (its text, tokens, cost and latency) to what ``child`` cost."""
    child.response += ("\n\n[retry]\n" if child.response else "") + completion.text
    child.prompt_tokens += completion.prompt_tokens
    child.completion_tokens += completion.completion_tokens
    child.cost += completion.cost
    child.latency_s += completion.latency_s
