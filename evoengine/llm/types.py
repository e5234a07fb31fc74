"""The model-client contract: chat messages in, a completion with its accounting out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Completion:
    """One model reply and what it cost."""

    text: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    cost: float = 0.0  # dollars; 0 when no price is known


class LLMError(RuntimeError):
    """A model call failed for good (after retries, where retrying makes sense).

    ``kind`` is one of: auth, model (unknown model), rate_limit, server, connection,
    timeout, malformed (a reply the client cannot use), bad_request, replay (``llm.replay``
    has no recorded answer, or cannot read its recording).

    ``spent``: a reply that came back but cannot be used (one over
    ``llm.max_reply_chars``), with what it cost; its text is the part worth keeping.
    The tokens and cost still count towards the run's accounting and budget.

    ``latency_s``: how long the failed call took, when known (set where calls are
    recorded, and from the recording on replay).
    """

    def __init__(self, kind: str, message: str, spent: Completion | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.spent = spent
        self.latency_s: float | None = None


class LLMClient(Protocol):
    """An async chat model. Implementations retry transient failures themselves."""

    model: str

    async def complete(self, messages: list[dict[str, str]], *, temperature: float,
                       max_tokens: int, seed: int | None = None) -> Completion: ...

    async def close(self) -> None: ...


#: The most tokens one call is taken to have used: far past any model's context, and
#: small enough for a database's 64-bit integer and for a float cost.
MAX_TOKEN_COUNT = 10**12


def token_count(value: object) -> int:
    """A token count as a server reports it: a whole number >= 0, or 0 for anything
    else (text, null, infinity, a negative count, which would lower the run's cost);
    a larger count than ``MAX_TOKEN_COUNT`` is taken as that (it still counts toward
    ``search.max_cost``; as given it failed the database write)."""
    try:
        return min(MAX_TOKEN_COUNT, max(0, int(value or 0)))  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError):
        return 0
