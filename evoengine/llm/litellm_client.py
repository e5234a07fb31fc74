"""``llm=litellm``: any provider litellm supports, named by its model string.

``llm.model`` is litellm's model string (``anthropic/claude-3-5-sonnet-latest``,
``ollama/llama3.1``, ``openai/gpt-4o-mini``, ...); each provider reads its own key
variable (``ANTHROPIC_API_KEY``, ...) as litellm documents. ``llm.base_url`` becomes
litellm's ``api_base`` (an Ollama or OpenAI-compatible server). Prices come from
``llm.price_*`` when set, otherwise from litellm's model table (its bundled copy: the
table is never fetched from the network), otherwise cost is 0.

litellm is imported lazily and pinned to the range tested here (extra ``litellm``).
Its own retries are off; the engine's policy (``evoengine.llm.retry``) applies.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import random
import time
from typing import Any

from evoengine.config.llm_schema import LLMConfig
from evoengine.llm.retry import Failure, call_with_retries, one_line
from evoengine.llm.types import Completion, LLMError, token_count

# status-less exception classes of litellm, by the kind the engine gives them
_KINDS = (
    ("AuthenticationError", "auth", False), ("PermissionDeniedError", "auth", False),
    ("NotFoundError", "model", False), ("RateLimitError", "rate_limit", True),
    ("Timeout", "timeout", True), ("APIConnectionError", "connection", True),
    ("InternalServerError", "server", True), ("ServiceUnavailableError", "server", True),
    ("BadGatewayError", "server", True), ("APIResponseValidationError", "malformed", True),
    ("ContextWindowExceededError", "bad_request", False),
    ("BadRequestError", "bad_request", False), ("APIError", "server", True),
)


class LiteLLMClient:
    """Chat completions through ``litellm.acompletion``."""

    def __init__(self, config: LLMConfig) -> None:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch
        try:
            import litellm
        except ImportError:
            raise LLMError("bad_request", "llm.provider=litellm needs the 'litellm' "
                           "package: pip install 'evoengine[litellm]'") from None
        litellm.telemetry = False
        litellm.suppress_debug_info = True  # its help banner, printed at every error
        self._litellm = litellm
        self.config = config
        self.model = config.model
        # llm=litellm sets api_key_env to "": each provider's own variable, read by
        # litellm (passing $OPENAI_API_KEY to Anthropic would be rejected)
        self._api_key = (os.environ.get(config.api_key_env) if config.api_key_env
                         else None) or None
        if config.base_url and not self._api_key:
            self._api_key = "not-needed"  # local servers need no key
        self._require_credentials()
        self._rng = random.Random()

    def _require_credentials(self) -> None:
        """Refuse to start when litellm knows the provider's key variable and it is
        unset: each call would otherwise fail (litellm reports it as a server error)."""
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # it prints a banner for some
                found = self._litellm.validate_environment(
                    model=self.model, api_key=self._api_key, api_base=self.config.base_url)
        except Exception:  # a model string it cannot place: the first call will say so
            return
        missing = [key for key in found.get("missing_keys") or () if isinstance(key, str)]
        if missing and not found.get("keys_in_environment"):
            raise LLMError("auth", f"llm.model={self.model} needs {' and '.join(missing)} "
                           "in the environment (litellm reads each provider's own "
                           "variable); or name yours with llm.api_key_env=VAR, or give "
                           "llm.base_url for a local server")

    async def complete(self, messages: list[dict[str, str]], *, temperature: float,
                       max_tokens: int, seed: int | None = None) -> Completion:
        start = time.perf_counter()
        response, (text, prompt_tokens, completion_tokens) = await call_with_retries(
            lambda: self._attempt(messages, temperature, max_tokens, seed),
            model=self.model, max_retries=self.config.max_retries,
            backoff_s=self.config.backoff_s, rng=self._rng)
        return Completion(text=text, model=self.model, prompt_tokens=prompt_tokens,
                          completion_tokens=completion_tokens,
                          latency_s=time.perf_counter() - start,
                          cost=self._cost(response, prompt_tokens, completion_tokens))

    async def close(self) -> None:
        return None

    async def _attempt(self, messages: list[dict[str, str]], temperature: float,
                       max_tokens: int, seed: int | None) -> tuple[Any, tuple[str, int, int]]:
        kwargs: dict[str, Any] = dict(model=self.model, messages=messages,
                                      temperature=temperature, max_tokens=max_tokens,
                                      timeout=self.config.timeout_s, num_retries=0,
                                      max_retries=0)
        if seed is not None:
            kwargs["seed"] = seed
        if self.config.base_url:
            kwargs["api_base"] = self.config.base_url
        if self._api_key:
            kwargs["api_key"] = self._api_key
        try:
            response = await asyncio.wait_for(self._litellm.acompletion(**kwargs),
                                              timeout=self.config.timeout_s)
        except asyncio.TimeoutError:
            raise Failure("timeout", f"no reply for {self.model} within llm.timeout_s="
                          f"{self.config.timeout_s:g}s", retry=True) from None
        except Exception as exc:  # litellm maps every provider's errors to its own types
            raise self._classify(exc) from None
        return response, self._parse(response)

    def _classify(self, exc: Exception) -> Failure:
        names = {cls.__name__ for cls in type(exc).__mro__}
        status = getattr(exc, "status_code", None)
        detail = one_line(getattr(exc, "message", None) or exc, 200)
        if "missing credentials" in detail.lower() or "api_key client option" in detail:
            return Failure("auth", f"no API key for {self.model}: {detail}", retry=False)
        if isinstance(status, int) and status >= 500 and "APIError" in names:
            return Failure("server", f"server error for {self.model}: {detail}", retry=True)
        if "LLM Provider NOT provided" in str(exc) or "model" in detail.lower() and (
                "not found" in detail.lower() or "does not exist" in detail.lower()):
            return Failure("model", f"unknown model {self.model!r}; check llm.model "
                           f"({detail})", retry=False)
        for name, kind, retry in _KINDS:
            if name in names:
                if kind == "auth":
                    detail = f"the provider rejected the API key for {self.model}: {detail}"
                elif kind == "model":
                    detail = f"unknown model {self.model!r}; check llm.model ({detail})"
                return Failure(kind, detail, retry=retry)
        return Failure("malformed", f"{type(exc).__name__} for {self.model}: {detail}",
                       retry=True)

    def _parse(self, response: Any) -> tuple[str, int, int]:
        try:
            content = response.choices[0].message.content
        except (AttributeError, IndexError, TypeError):
            content = None
        if not isinstance(content, str):
            raise Failure("malformed", f"reply for {self.model} has no message content",
                          retry=True)
        usage = getattr(response, "usage", None)
        prompt_tokens = token_count(getattr(usage, "prompt_tokens", 0))
        completion_tokens = token_count(getattr(usage, "completion_tokens", 0))
        return content, prompt_tokens, completion_tokens

    def _cost(self, response: Any, prompt_tokens: int, completion_tokens: int) -> float:
        price_in, price_out = self.config.price_input_per_mtok, \
            self.config.price_output_per_mtok
        if price_in is not None or price_out is not None:
            return (prompt_tokens * (price_in or 0.0)
                    + completion_tokens * (price_out or 0.0)) / 1_000_000
        try:  # litellm's model table; unknown models have no price
            return float(self._litellm.completion_cost(completion_response=response) or 0.0)
        except Exception:
            return 0.0
