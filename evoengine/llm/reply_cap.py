"""``llm.max_reply_chars``: a model reply past the cap is dropped before anything
stores or parses it.

A local model that does not stop (one that ignores ``max_tokens``, or a server that
streams on) could otherwise send megabytes per call, and every reply is stored twice
(the call's recording and the step's mutation record). The call fails as
``malformed``; its tokens and cost still count (``LLMError.spent``), and the start of
the reply is kept so the archive shows what the model was doing.
"""

from __future__ import annotations

import dataclasses

from evoengine.llm.types import Completion, LLMClient, LLMError

KEPT_CHARS = 2000  # how much of an over-long reply the archive keeps


class ReplyCap:
    """An ``LLMClient`` that refuses replies of ``inner`` longer than ``max_chars``."""

    def __init__(self, inner: LLMClient, max_chars: int) -> None:
        self.inner = inner
        self.max_chars = max_chars
        self.model = inner.model

    async def complete(self, messages: list[dict[str, str]], *, temperature: float,
                       max_tokens: int, seed: int | None = None) -> Completion:
        completion = await self.inner.complete(messages, temperature=temperature,
                                               max_tokens=max_tokens, seed=seed)
        size = len(completion.text)
        if size <= self.max_chars:
            return completion
        raise LLMError(
            "malformed",
            f"the reply has {size:,} characters, over llm.max_reply_chars={self.max_chars:,}"
            f" (kept its first {min(KEPT_CHARS, self.max_chars):,}); lower llm.max_tokens "
            "or raise llm.max_reply_chars",
            spent=dataclasses.replace(completion, text=completion.text[:KEPT_CHARS]))

    async def close(self) -> None:
        await self.inner.close()
