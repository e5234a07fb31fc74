"""An :class:`~evoengine.llm.types.LLMClient` for OpenAI and any OpenAI-compatible server.

Talks through the official ``openai`` SDK (``AsyncOpenAI``), imported lazily so the
core install does not need it (``pip install 'evoengine[openai]'``). The SDK's own
retries are switched off; this client retries itself so that every failure ends as
one :class:`~evoengine.llm.types.LLMError` with a kind and a one-line message.

Failure handling (``n`` = ``llm.max_retries``; backoff starts at ``llm.backoff_s``
and doubles per retry, capped at 60 s, plus up to 25 % jitter; a ``Retry-After`` /
``retry-after-ms`` header, when present, replaces the computed delay, capped at 60 s):

=====================================  ===============  ==============================
what happened                          LLMError kind    retried
=====================================  ===============  ==============================
HTTP 429                               ``rate_limit``   up to ``n`` times
HTTP 429 with code insufficient_quota  ``rate_limit``   no (waiting does not help)
HTTP 5xx                               ``server``       up to ``n`` times
connection refused / reset / dropped   ``connection``   up to ``n`` times
no reply within ``llm.timeout_s``,     ``timeout``      up to ``n`` times
HTTP 408
HTTP 401, 403                          ``auth``         no
HTTP 404, or an error whose code is    ``model``        no
model_not_found / says the model does
not exist
other HTTP 4xx                         ``bad_request``  no
a 200 reply without choices, without   ``malformed``    once (if ``n`` >= 1)
message content, or not JSON
=====================================  ===============  ==============================

A malformed reply is retried once only: a truncated or garbled body (a proxy hiccup,
an overloaded server) is sometimes transient, but a server that keeps answering
garbage will not be fixed by more attempts.

A 400 that says ``max_tokens``, ``temperature`` or ``seed`` is unsupported by the model
(OpenAI's reasoning models) is answered by adapting the request once -- ``max_tokens``
becomes ``max_completion_tokens``, the others are left out -- and the adaptation is
kept for later calls; it does not use up a retry.

``Completion.latency_s`` is the wall time of the whole ``complete`` call (retries and
backoff included: what the search waited); ``Completion.model`` is the configured
model name; tokens come from the reply's ``usage`` (0 when absent); ``cost`` uses
``llm.price_input_per_mtok`` / ``llm.price_output_per_mtok``; with neither set, the
model's prices in litellm's table when litellm is installed and names the model
(``price_table.py``), else 0.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import random
import re
import time
from typing import Any

from evoengine.config.llm_schema import LLMConfig
from evoengine.errors import causes
from evoengine.llm.body_cap import body_limit, capping_hook, too_large, too_large_message
from evoengine.llm.price_table import model_prices
from evoengine.llm.retry import (
    MAX_BACKOFF_S,
    RETRY_AFTER_CAP_S,
    Failure,
    call_with_retries,
    retry_after_s,
)
from evoengine.llm.retry import one_line as _one_line
from evoengine.llm.types import Completion, LLMError, token_count

log = logging.getLogger(__name__)

PLACEHOLDER_API_KEY = "not-needed"  # sent to a base_url server when no key is set
__all__ = ["MAX_BACKOFF_S", "PLACEHOLDER_API_KEY", "RETRY_AFTER_CAP_S", "OpenAIClient"]
_MODEL_MISSING = re.compile(r"model\b.*\b(not found|does not exist|not exist)", re.I)
_ADAPTABLE = ("max_tokens", "temperature", "seed")
_COMPLETIONS_PATH = "/chat/completions"


def _field(obj: Any, name: str) -> Any:
    """``obj.name`` or ``obj[name]``; None when absent (replies are not validated)."""
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def _http_client(openai: Any, config: LLMConfig) -> Any:
    """The SDK's HTTP client for ``llm.http_client``, reading at most
    ``body_limit(llm.max_reply_chars)`` bytes of a response (``body_cap.py``).

    ``aiohttp`` is the SDK's own ``DefaultAioHttpClient`` (its ``aiohttp`` extra: an
    httpx client over an aiohttp transport), about half the CPU per request of the
    default httpx stack; ``auto`` takes it when that extra is installed.
    """
    limit = body_limit(config.max_reply_chars)
    options: dict[str, Any] = {"timeout": config.timeout_s}
    if limit is not None:
        options["event_hooks"] = {"response": [capping_hook(limit)]}
    if config.http_client == "httpx":
        return openai.DefaultAsyncHttpxClient(**options)
    if importlib.util.find_spec("httpx_aiohttp") is None or not hasattr(
            openai, "DefaultAioHttpClient"):  # the extra, and an SDK recent enough to have it
        if config.http_client == "aiohttp":
            raise LLMError("bad_request", "llm.http_client=aiohttp needs the SDK's aiohttp "
                           "extra: pip install 'openai[aiohttp]' (or set llm.http_client="
                           "httpx)")
        return openai.DefaultAsyncHttpxClient(**options)
    return openai.DefaultAioHttpClient(**options)


def _dropped_connection(exc: BaseException) -> str | None:
    """What really happened when the aiohttp transport reports a timeout that was not.

    ``httpx_aiohttp`` turns every aiohttp connection error (refused, reset, a server
    that closed the socket without answering) into ``httpx.ConnectTimeout``, which the
    SDK raises as ``APITimeoutError``; the aiohttp exception is still in the chain.
    """
    for cause in causes(exc):
        if type(cause).__module__.startswith("aiohttp") and not isinstance(
                cause, TimeoutError):
            return f"{type(cause).__name__}: {cause}"
    return None


class OpenAIClient:
    """Chat completions through ``openai.AsyncOpenAI`` with the engine's retry policy."""

    def __init__(self, config: LLMConfig) -> None:
        try:
            import httpx  # the openai SDK's own HTTP client
            import openai
        except ImportError:
            raise LLMError("bad_request", "llm.provider=openai needs the 'openai' package: "
                           "pip install 'evoengine[openai]'") from None
        self._openai = openai
        self.config = config
        self.model = config.model
        key = (os.environ.get(config.api_key_env) or "").strip()
        self._key_missing = not key
        if not key:
            if not config.base_url:
                raise LLMError("auth", f"set {config.api_key_env} (or llm.api_key_env) "
                                       "or llm.base_url")
            key = PLACEHOLDER_API_KEY  # local servers (vLLM, Ollama, ...) need no key
        self._raw = httpx.Response
        self._client = openai.AsyncOpenAI(api_key=key, base_url=config.base_url,
                                          timeout=config.timeout_s, max_retries=0,
                                          http_client=_http_client(openai, config))
        self.base_url = str(self._client.base_url).rstrip("/")
        self._adapted: set[str] = set()
        self._prices = model_prices(config) or (0.0, 0.0)
        self._rng = random.Random()
        self._closed = False

    # -- public ---------------------------------------------------------------------

    async def complete(self, messages: list[dict[str, str]], *, temperature: float,
                       max_tokens: int, seed: int | None = None) -> Completion:
        start = time.perf_counter()
        unusable = [0, 0]  # tokens of replies that came back with usage but no content
        try:
            text, prompt_tokens, completion_tokens = await call_with_retries(
                lambda: self._attempt(messages, temperature=temperature,
                                      max_tokens=max_tokens, seed=seed, unusable=unusable),
                model=self.model, max_retries=self.config.max_retries,
                backoff_s=self.config.backoff_s, rng=self._rng, adapted=self._adapted)
        except LLMError as exc:  # a refusal is billed: its tokens count all the same
            if exc.spent is None and any(unusable):
                exc.spent = Completion(
                    text="", model=self.model, prompt_tokens=unusable[0],
                    completion_tokens=unusable[1], latency_s=time.perf_counter() - start,
                    cost=self._cost(*unusable))
            raise
        prompt_tokens += unusable[0]
        completion_tokens += unusable[1]
        return Completion(
            text=text, model=self.model, prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens, latency_s=time.perf_counter() - start,
            cost=self._cost(prompt_tokens, completion_tokens))

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._client.close()

    async def __aenter__(self) -> OpenAIClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- one attempt ----------------------------------------------------------------

    def _request(self, messages: list[dict[str, str]], *, temperature: float,
                 max_tokens: int, seed: int | None) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": messages}
        if "max_tokens" in self._adapted:
            body["max_completion_tokens"] = max_tokens
        else:
            body["max_tokens"] = max_tokens
        if "temperature" not in self._adapted:
            body["temperature"] = temperature
        if seed is not None and "seed" not in self._adapted:
            body["seed"] = seed
        return body

    async def _attempt(self, messages: list[dict[str, str]], *, temperature: float,
                       max_tokens: int, seed: int | None, unusable: list[int]
                       ) -> tuple[str, int, int]:
        openai = self._openai
        timeout = self.config.timeout_s
        body = self._request(messages, temperature=temperature, max_tokens=max_tokens,
                             seed=seed)
        try:
            # The SDK's client (auth, base URL, timeouts, its HTTP errors as exceptions)
            # with the body as we built it and the reply as raw bytes: its typed
            # ``chat.completions.create`` spends about 0.5 ms of CPU per call checking
            # a request we wrote and building response models we do not read.
            # The SDK timeout bounds each phase; wait_for bounds the whole request.
            response = await asyncio.wait_for(
                self._client.post(_COMPLETIONS_PATH, body=body, cast_to=self._raw,
                                  options={"timeout": timeout}),
                timeout=timeout)
            reply = json.loads(response.content)
        except (asyncio.TimeoutError, openai.APITimeoutError) as exc:
            dropped = _dropped_connection(exc)
            if dropped is not None:
                raise Failure("connection", f"could not reach {self.base_url} ({dropped})",
                               retry=True) from None
            raise Failure("timeout", f"no reply from {self.base_url} within "
                           f"llm.timeout_s={timeout:g}s", retry=True) from None
        except openai.APIConnectionError as exc:
            flooded = too_large(exc)
            if flooded is not None:
                raise Failure("malformed", too_large_message(
                    str(self.base_url), flooded.limit, self.config.max_reply_chars or 0),
                    retry=False) from None
            cause = exc.__cause__ or exc.__context__
            detail = f"{type(cause).__name__}: {cause}" if cause is not None else str(exc)
            raise Failure("connection", f"could not reach {self.base_url} ({detail})",
                           retry=True) from None
        except openai.APIStatusError as exc:
            raise self._status_failure(exc) from None
        except ValueError as exc:  # an invalid JSON body (json.JSONDecodeError)
            raise Failure("malformed", f"reply from {self.base_url} is not valid JSON "
                           f"({_one_line(str(exc), 80)})", retry=True) from None
        except openai.OpenAIError as exc:
            raise Failure("server", f"{type(exc).__name__} from {self.base_url}: {exc}",
                           retry=False) from None
        return self._parse(reply, unusable)

    def _parse(self, response: Any, unusable: list[int]) -> tuple[str, int, int]:
        """(content, prompt tokens, completion tokens); a reply without content adds
        its tokens to ``unusable`` before it fails."""
        where = f"reply from {self.base_url}"
        if isinstance(response, (str, bytes)):
            raise Failure("malformed", f"{where} is not JSON: {_one_line(response, 80)!r}",
                           retry=True)
        usage = _field(response, "usage")
        tokens = (self._tokens(usage, "prompt_tokens"), self._tokens(usage, "completion_tokens"))
        choices = _field(response, "choices")
        if not choices or not isinstance(choices, (list, tuple)):
            unusable[:] = [unusable[0] + tokens[0], unusable[1] + tokens[1]]
            raise Failure("malformed", f"{where} has no choices", retry=True)
        message = _field(choices[0], "message")
        content = _field(message, "content") if message is not None else None
        if not isinstance(content, str):
            refusal = _field(message, "refusal") if message is not None else None
            reason = _field(choices[0], "finish_reason")
            detail = f"; the model refused: {refusal}" if refusal else (
                f" (finish_reason={reason})" if reason else "")
            unusable[:] = [unusable[0] + tokens[0], unusable[1] + tokens[1]]
            raise Failure("malformed", f"{where} has no message content{detail}",
                           retry=True)
        return content, tokens[0], tokens[1]

    @staticmethod
    def _tokens(usage: Any, name: str) -> int:
        return 0 if usage is None else token_count(_field(usage, name))

    def _status_failure(self, exc: Any) -> Failure:
        status = int(exc.status_code)
        body = exc.body
        detail = _field(body, "message") if isinstance(body, dict) else None
        if not detail:
            detail = body if isinstance(body, str) and body else exc.message
        detail = _one_line(detail, 160)
        code = str(getattr(exc, "code", None) or "")
        param = str(getattr(exc, "param", None) or "")
        where = f"{self.base_url} (HTTP {status})"
        if status in (401, 403):
            env = self.config.api_key_env
            if self._key_missing:
                text = (f"the server at {where} wants an API key and ${env} is not set; "
                        f"set ${env}")
            else:
                text = f"the server rejected the API key at {where}; check ${env}"
            return Failure("auth", text, retry=False)
        if status == 404 or code == "model_not_found" or (
                status < 500 and _MODEL_MISSING.search(str(detail))):
            return Failure("model", f"unknown model {self.model!r} at {self.base_url}; "
                            f"check llm.model (HTTP {status}: {detail})", retry=False)
        if status == 429:
            if code == "insufficient_quota":
                return Failure("rate_limit", f"quota exhausted at {where}: {detail}; "
                                "check the account's plan and billing", retry=False)
            return Failure("rate_limit", f"rate limited by {where}: {detail}", retry=True,
                            retry_after=retry_after_s(exc.response.headers))
        if status >= 500:
            return Failure("server", f"server error from {where}: {detail}", retry=True,
                            retry_after=retry_after_s(exc.response.headers))
        if status == 408:
            return Failure("timeout", f"request timed out at {where}: {detail}",
                            retry=True, retry_after=retry_after_s(exc.response.headers))
        if status == 400 and param in _ADAPTABLE and code.startswith("unsupported"):
            return Failure("bad_request", f"{where}: {detail}", retry=False, adapt=param)
        return Failure("bad_request", f"the server rejected the request at {where}: "
                        f"{detail}", retry=False)

    # -- accounting and pacing ------------------------------------------------------

    def _cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        price_in, price_out = self._prices
        return (prompt_tokens * price_in + completion_tokens * price_out) / 1_000_000
