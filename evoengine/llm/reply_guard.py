"""What a model reply must be before the engine takes it: text that every store can
hold, no longer than ``llm.max_reply_chars``.

* Valid Unicode without NUL. JSON lets a server send a lone surrogate (``"\\ud800"``)
  or a NUL (``"\\u0000"``); Python takes both into a ``str``, but no UTF-8 encoder
  (SQLite, hashing) takes the first and PostgreSQL's text takes neither. Both become
  U+FFFD, in replies and in error messages alike, so nothing a server sends can stop
  the run when it is stored.
* Not endless. A local model that does not stop (one that ignores ``max_tokens``, or a
  server that streams on) could otherwise send megabytes per call, and every reply is
  stored twice (the call's recording and the step's mutation record). Such a call
  fails as ``malformed`` before anything parses it; its tokens and cost still count
  (``LLMError.spent``), and the start of the reply is kept so the archive shows what
  the model was doing.
"""

from __future__ import annotations

import dataclasses

from evoengine.archive.storable import storable_text
from evoengine.llm.types import Completion, LLMClient, LLMError

KEPT_CHARS = 2000  # how much of an over-long reply the archive keeps


class ReplyGuard:
    """An ``LLMClient`` that makes the replies (and errors) of ``inner`` storable text
    and refuses replies longer than ``max_chars`` (None: no cap)."""

    def __init__(self, inner: LLMClient, max_chars: int | None) -> None:
        self.inner = inner
        self.max_chars = max_chars
        self.model = inner.model

    async def complete(self, messages: list[dict[str, str]], *, temperature: float,
                       max_tokens: int, seed: int | None = None) -> Completion:
        try:
            completion = await self.inner.complete(messages, temperature=temperature,
                                                   max_tokens=max_tokens, seed=seed)
        except LLMError as exc:
            message = str(exc)
            if storable_text(message) is message:  # (the same object when it is clean)
                raise
            clean = LLMError(exc.kind, storable_text(message), exc.spent)
            clean.latency_s = exc.latency_s
            raise clean from None
        size = len(completion.text)
        if self.max_chars is None or size <= self.max_chars:
            text = storable_text(completion.text)
            return completion if text is completion.text else dataclasses.replace(
                completion, text=text)
        kept = min(KEPT_CHARS, self.max_chars)
        raise LLMError(
            "malformed",
            f"the reply has {size:,} characters, over llm.max_reply_chars={self.max_chars:,}"
            f" (kept its first {kept:,}); lower llm.max_tokens or raise llm.max_reply_chars",
            spent=dataclasses.replace(completion, text=storable_text(completion.text[:kept])))

    async def close(self) -> None:
        await self.inner.close()
