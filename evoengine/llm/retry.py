"""The retry policy every model client shares.

A client classifies each failed attempt as a :class:`Failure` (its kind, whether
retrying can help, and a server-suggested delay); :func:`call_with_retries` retries
transient ones (429, 5xx, connection errors, timeouts) with exponential backoff and
jitter, retries a malformed reply at most once, and raises a one-line ``LLMError``.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from evoengine.llm.types import LLMError

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 60.0
RETRY_AFTER_CAP_S = 60.0
_JITTER = 0.25
MESSAGE_LIMIT = 300

T = TypeVar("T")


def one_line(text: object, limit: int = MESSAGE_LIMIT) -> str:
    """``text`` squeezed onto one line of at most ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class Failure(Exception):
    """One failed attempt, classified."""

    def __init__(self, kind: str, message: str, *, retry: bool,
                 retry_after: float | None = None, adapt: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retry = retry
        self.retry_after = retry_after
        self.adapt = adapt  # a request parameter the server refused; drop it and retry


def backoff_delay(retries: int, backoff_s: float, retry_after: float | None,
                  rng: random.Random) -> float:
    """The wait before retry number ``retries + 1``."""
    if retry_after is not None:
        return min(retry_after, RETRY_AFTER_CAP_S)
    base = min(backoff_s * (2 ** retries), MAX_BACKOFF_S)
    return base * (1.0 + _JITTER * rng.random())


async def call_with_retries(attempt: Callable[[], Awaitable[T]], *, model: str,
                            max_retries: int, backoff_s: float, rng: random.Random,
                            adapted: set[str] | None = None) -> T:
    """Run ``attempt`` until it succeeds or fails for good (then raise ``LLMError``).

    A failure naming an ``adapt`` parameter not yet in ``adapted`` is added to it and
    retried at once without using up a retry: the attempt rebuilds its request.
    """
    retries = 0
    malformed_retried = False
    while True:
        try:
            return await attempt()
        except Failure as failure:
            if adapted is not None and failure.adapt is not None \
                    and failure.adapt not in adapted:
                adapted.add(failure.adapt)
                log.info("model %s: %s unsupported; adapting the request", model,
                         failure.adapt)
                continue
            can_retry = failure.retry and retries < max_retries
            if failure.kind == "malformed":
                can_retry = can_retry and not malformed_retried
                malformed_retried = True
            if not can_retry:
                attempts = retries + 1
                suffix = f" (after {attempts} attempts)" if attempts > 1 else ""
                raise LLMError(failure.kind, one_line(failure.message + suffix)) from None
            delay = backoff_delay(retries, backoff_s, failure.retry_after, rng)
            retries += 1
            log.debug("model %s: %s (%s); retry %d/%d in %.2fs", model, failure.kind,
                      failure.message, retries, max_retries, delay)
            await asyncio.sleep(delay)


def retry_after_s(headers: Any) -> float | None:
    """Seconds asked for by ``retry-after-ms`` or ``Retry-After`` (seconds or a date)."""
    if headers is None:
        return None
    if isinstance(headers, dict):  # a plain mapping (litellm's): names in any case
        headers = {str(name).lower(): value for name, value in headers.items()}
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())
