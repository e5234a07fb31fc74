"""``llm=litellm``: any provider litellm supports, named by its model string.

``llm.model`` is litellm's model string (``anthropic/claude-3-5-sonnet-latest``,
``ollama/llama3.1``, ``openai/gpt-4o-mini``, ...); each provider reads its own key
variable (``ANTHROPIC_API_KEY``, ...) as litellm documents. ``llm.base_url`` becomes
litellm's ``api_base`` (an Ollama or OpenAI-compatible server). Prices come from
``llm.price_*`` when set, otherwise from litellm's model table (its bundled copy: the
table is never fetched from the network), otherwise cost is 0.

litellm is imported lazily and pinned to the range tested here (extra ``litellm``).
Its own retries are off; the engine's policy (``evoengine.llm.retry``) applies.

As for ``llm=openai``, at most ``body_limit(llm.max_reply_chars)`` bytes of a reply's
body are read (``body_cap.py``): a longer one fails as ``malformed``, not retried.
litellm reads a reply through one of two kinds of client, and takes ours as
``acompletion(client=...)``: an ``openai.AsyncOpenAI`` on its OpenAI-compatible route
(``openai/``, ``custom_openai/``, ``deepinfra/``, ``lm_studio/``, ...: ``_SDK_ROUTE``),
a litellm ``AsyncHTTPHandler`` on its own HTTP handler (``hosted_vllm/``, ``ollama/``,
``anthropic/``, ``gemini/``, ...: ``_HANDLER_ROUTE``). Each client is this object's
own, built by litellm's ``AsyncHTTPHandler`` (its transport, TLS and proxy settings)
with the capping hook added, and closed by :meth:`LiteLLMClient.close`; nothing
process-wide is changed. A client of the wrong kind breaks a route, so only the
providers checked against litellm 1.106 get one; the others (``azure/``,
``bedrock/``, ``vertex_ai/``, ``sagemaker/``, ``cohere/``, ...) read the whole body
with litellm's own clients, and ``llm.max_reply_chars`` refuses a long reply after it
arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import math
import os
import random
import time
from typing import Any

from evoengine.config.llm_schema import LLMConfig
from evoengine.llm.body_cap import body_limit, capping_hook, too_large, too_large_message
from evoengine.llm.retry import Failure, call_with_retries, one_line, retry_after_s
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

# The providers whose requests litellm 1.106 sends through a client given as
# ``acompletion(client=...)``, by the kind of client each route takes (each checked:
# tests/test_litellm_client.py floods every one). Its OpenAI-compatible route takes
# an ``openai.AsyncOpenAI``:
_SDK_ROUTE = frozenset({
    "openai", "custom_openai", "aiml", "ai21", "ai21_chat", "apertis", "assemblyai",
    "baseten", "cerebras", "charity_engine", "chutes", "codestral", "cognition",
    "cortecs", "darkbloom", "dashscope", "deepinfra", "docker_model_runner", "empower",
    "featherless_ai", "friendliai", "galadriel", "github", "helicone", "hyperbolic",
    "inception", "lambda_ai", "libertai", "litellm_proxy", "llamafile", "lm_studio",
    "meta", "meta_llama", "modelscope", "moonshot", "nano-gpt", "nebius", "neosantara",
    "novita", "nscale", "nvidia_nim", "parasail", "perplexity", "pinstripes", "poe",
    "prism", "publicai", "qwen_ai_platform", "qwencloud", "reka", "sail", "sambanova",
    "scaleway", "scx-ai", "synthetic", "tencent", "tensormesh", "vercel_ai_gateway",
    "volcengine", "wandb", "xiaomi_mimo", "xinference", "zai",
})
# its own HTTP handler a litellm ``AsyncHTTPHandler``:
_HANDLER_ROUTE = frozenset({
    "anthropic", "azure_ai", "bedrock_mantle", "cometapi", "compactifai", "databricks",
    "datarobot", "deepseek", "edenai", "fireworks_ai", "gemini", "groq", "heroku",
    "hosted_vllm", "huggingface", "lemonade", "minimax", "mistral", "nadir", "ollama",
    "ollama_chat", "openrouter", "ovhcloud", "snowflake", "together_ai", "xai",
})


def _no_retry_sdk(openai: Any) -> Any:
    """``openai.AsyncOpenAI`` whose own retries stay off. litellm sets the client's
    ``max_retries`` to its default of 2 for providers whose parameters leave
    ``max_retries`` out (``deepinfra``, ``nvidia_nim``, ...), and the SDK would ask a
    flooding server twice more; the engine retries (``evoengine.llm.retry``)."""

    class NoRetryAsyncOpenAI(openai.AsyncOpenAI):  # type: ignore[misc]
        @property
        def max_retries(self) -> int:
            return 0

        @max_retries.setter
        def max_retries(self, value: int) -> None:
            pass

    return NoRetryAsyncOpenAI


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
        self._limit = body_limit(config.max_reply_chars)
        self._route = self._plan_route()
        self._handler: Any = None  # litellm's AsyncHTTPHandler, capped; made on first use
        self._sdk: Any = None  # an openai.AsyncOpenAI over the handler's HTTP client

    def _provider(self) -> tuple[str, str | None, str | None]:
        """The provider litellm picks for the model, with the key and base URL it
        resolves for it (``get_llm_provider``, as ``acompletion`` calls it)."""
        _, provider, key, base = self._litellm.get_llm_provider(
            model=self.model, api_base=self.config.base_url, api_key=self._api_key)
        return provider, key, base

    def _plan_route(self) -> str | None:
        """The kind of capped client litellm takes for the model: "sdk", "handler",
        or None (none: no cap asked for, or a provider not checked)."""
        if self._limit is None:
            return None
        try:
            provider = self._provider()[0]
        except Exception:  # a model string it cannot place: the first call will say so
            return None
        return "sdk" if provider in _SDK_ROUTE else (
            "handler" if provider in _HANDLER_ROUTE else None)

    def _capped_client(self) -> Any:
        """The client to hand to ``acompletion`` (None: litellm's own)."""
        if self._route is None or self._limit is None:
            return None
        if self._handler is None:
            from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler

            self._handler = AsyncHTTPHandler(
                timeout=self.config.timeout_s,
                event_hooks={"response": [capping_hook(self._limit)]})
        if self._route == "handler":
            return self._handler
        if self._sdk is None:
            import openai
            from litellm.llms.openai.common_utils import get_openai_credentials

            # the base URL and key litellm would give the SDK client it builds itself
            # (with no key, the SDK raises here as it would there: reported as "auth")
            _, key, base = self._provider()
            found = get_openai_credentials(api_base=base, api_key=key or self._api_key)
            self._sdk = _no_retry_sdk(openai)(
                api_key=found.api_key, base_url=found.api_base,
                timeout=self.config.timeout_s, http_client=self._handler.client)
        return self._sdk

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
        text, prompt_tokens, completion_tokens = await call_with_retries(
            lambda: self._attempt(messages, temperature, max_tokens, seed),
            model=self.model, max_retries=self.config.max_retries,
            backoff_s=self.config.backoff_s, rng=self._rng)
        return Completion(text=text, model=self.model, prompt_tokens=prompt_tokens,
                          completion_tokens=completion_tokens,
                          latency_s=time.perf_counter() - start,
                          cost=self._cost(prompt_tokens, completion_tokens))

    async def close(self) -> None:
        sdk, handler = self._sdk, self._handler
        self._sdk = self._handler = None
        if sdk is not None:
            await sdk.close()  # closes the handler's HTTP client it reads through
        if handler is not None:
            await handler.close()

    async def _attempt(self, messages: list[dict[str, str]], temperature: float,
                       max_tokens: int, seed: int | None) -> tuple[str, int, int]:
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
            client = self._capped_client()
            if client is not None:
                kwargs["client"] = client
            response = await asyncio.wait_for(self._litellm.acompletion(**kwargs),
                                              timeout=self.config.timeout_s)
        except asyncio.TimeoutError:
            raise Failure("timeout", f"no reply for {self.model} within llm.timeout_s="
                          f"{self.config.timeout_s:g}s", retry=True) from None
        except Exception as exc:  # litellm maps every provider's errors to its own types
            raise self._classify(exc) from None
        return self._parse(response)

    def _classify(self, exc: Exception) -> Failure:
        flooded = too_large(exc)
        if flooded is not None and self.config.max_reply_chars is not None:
            # it would flood again: not retried
            base = self.config.base_url
            source = f"{self.model} at {base}" if base else self.model
            return Failure("malformed", too_large_message(
                source, flooded.limit, self.config.max_reply_chars), retry=False)
        names = {cls.__name__ for cls in type(exc).__mro__}
        status = getattr(exc, "status_code", None)
        detail = one_line(getattr(exc, "message", None) or exc, 200)
        if "missing credentials" in detail.lower() or "api_key client option" in detail:
            return Failure("auth", f"no API key for {self.model}: {detail}", retry=False)
        if "Invalid response object" in detail:  # litellm could not convert the reply
            # (a float token count, say): the reply's fault, not the server's; its
            # message carries litellm's traceback, left out here
            return Failure("malformed", f"litellm could not read the reply of {self.model} "
                           "(Invalid response object)", retry=True)
        # the server's Retry-After, as litellm keeps its response headers
        wait = retry_after_s(getattr(exc, "litellm_response_headers", None))
        if isinstance(status, int) and status >= 500 and "APIError" in names:
            return Failure("server", f"server error for {self.model}: {detail}", retry=True,
                           retry_after=wait)
        if "LLM Provider NOT provided" in str(exc) or "model" in detail.lower() and (
                "not found" in detail.lower() or "does not exist" in detail.lower()):
            return Failure("model", f"unknown model {self.model!r}; check llm.model "
                           f"({detail})", retry=False)
        body = getattr(exc, "body", None)
        if "RateLimitError" in names and isinstance(body, dict) and body.get(
                "code") == "insufficient_quota":  # waiting does not help
            return Failure("rate_limit", f"quota exhausted for {self.model}: {detail}; check "
                           "the account's plan and billing", retry=False)
        for name, kind, retry in _KINDS:
            if name in names:
                if kind == "auth":
                    detail = f"the provider rejected the API key for {self.model}: {detail}"
                elif kind == "model":
                    detail = f"unknown model {self.model!r}; check llm.model ({detail})"
                return Failure(kind, detail, retry=retry, retry_after=wait if retry else None)
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

    def _cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        price_in, price_out = self.config.price_input_per_mtok, \
            self.config.price_output_per_mtok
        if price_in is not None or price_out is not None:
            return (prompt_tokens * (price_in or 0.0)
                    + completion_tokens * (price_out or 0.0)) / 1_000_000
        try:  # litellm's model table, on the checked counts (a negative usage in the
            # reply lowered the run's cost); unknown models have no price
            costs = self._litellm.cost_per_token(model=self.model, prompt_tokens=prompt_tokens,
                                                 completion_tokens=completion_tokens)
            cost = float(sum(costs))
        except Exception:
            return 0.0
        return cost if math.isfinite(cost) and cost > 0 else 0.0
