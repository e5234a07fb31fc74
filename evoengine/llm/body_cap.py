"""A cap on the bytes of a model server's HTTP response, applied while it is read.

``llm.max_reply_chars`` (``reply_guard.py``) refuses a long reply after it arrived;
the SDK reads the whole body first, so a server that streams on (a runaway model, a
broken proxy) could fill the engine's memory before that check ran: a 300 MB body took
the process to 940 MB, and eight requests run at once. An httpx response hook wraps
the body's stream in one that stops with :class:`BodyTooLarge` once the body passes
:func:`body_limit` bytes, which the client reports as a ``malformed`` reply. Both the
``openai`` client and ``llm=litellm`` (``litellm_client.py``) install it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from evoengine.errors import causes

# JSON writes one character in at most 12 bytes (a character beyond U+FFFF as two
# six-byte escapes, one per surrogate); the envelope (id, usage, ...) fits in the slack.
_BYTES_PER_CHAR = 12
_SLACK_BYTES = 1 << 20


class BodyTooLarge(Exception):
    """The response body passed ``limit`` bytes; the rest was not read."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the response body passed {limit:,} bytes")
        self.limit = limit


def body_limit(max_reply_chars: int | None) -> int | None:
    """The most bytes a body may have whose reply ``ReplyGuard`` could still take
    (None: no cap, as ``llm.max_reply_chars: null`` asks)."""
    if max_reply_chars is None:
        return None
    return max_reply_chars * _BYTES_PER_CHAR + _SLACK_BYTES


def capping_hook(limit: int) -> Callable[[Any], Awaitable[None]]:
    """An httpx ``response`` event hook that caps every response body at ``limit``
    bytes (the hook runs before the client reads the body)."""
    import httpx  # the openai SDK's HTTP client; imported with it

    class CappedStream(httpx.AsyncByteStream):
        def __init__(self, inner: httpx.AsyncByteStream) -> None:
            self._inner = inner

        async def __aiter__(self) -> AsyncIterator[bytes]:
            total = 0
            async for chunk in self._inner:
                total += len(chunk)
                if total > limit:
                    raise BodyTooLarge(limit)
                yield chunk

        async def aclose(self) -> None:
            await self._inner.aclose()

    async def hook(response: httpx.Response) -> None:
        response.stream = CappedStream(response.stream)

    return hook


def too_large_message(source: str, limit: int, max_reply_chars: int) -> str:
    """The one line a client reports when the body from ``source`` was cut off."""
    return (f"the reply from {source} passed {limit:,} bytes before it ended (the most a "
            f"reply of llm.max_reply_chars={max_reply_chars:,} can take); lower "
            "llm.max_tokens or raise llm.max_reply_chars")


def too_large(exc: BaseException) -> BodyTooLarge | None:
    """The :class:`BodyTooLarge` behind ``exc`` (the SDK wraps it in a connection
    error), if any."""
    return next((cause for cause in causes(exc) if isinstance(cause, BodyTooLarge)), None)
