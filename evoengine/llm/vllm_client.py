"""``llm=vllm``: an in-process ``vllm.LLM`` on a local model, sampled in batches.

``llm.model`` is the path of a local model folder (a Hugging Face checkpoint with a chat
template); nothing is downloaded. vLLM is imported lazily (``pip install
'evoengine[vllm]'``, which needs a GPU) and the engine is built once, on the first
request, in a worker thread so the event loop keeps running while the weights load.

Batching. :meth:`VLLMClient.complete` is called concurrently by the controller (up to
``search.llm_concurrency`` at once). Each call queues its request; one background task
collects up to ``llm.vllm_batch_size`` queued requests -- or whatever arrived within
``batch_window_s`` (20 ms) of the oldest one -- and serves them with ONE
``LLM.chat(conversations, sampling_params, lora_request=...)`` call in a worker thread.
Each request keeps its own ``SamplingParams`` (``temperature``, ``max_tokens``,
``seed``), so seeded proposals stay reproducible whatever they were batched with.
Batches run one after another (the engine is not shared between threads).

LoRA. ``llm.lora_adapters`` maps names to adapter folders and ``llm.lora_adapter``
names the one to sample with; :meth:`VLLMClient.add_adapter`, :meth:`~VLLMClient.use_adapter`
and :meth:`~VLLMClient.prepare_lora` change them during a run. The registry of names, ids
and folders, the engine's ``max_lora_rank`` and :func:`served_adapter` live in
:mod:`evoengine.llm.vllm_lora` (their names are importable from here too).

Accounting. ``Completion.model`` is ``llm.model`` (the adapter is not part of the
name); tokens are the lengths of the output's prompt and completion token ids; cost
is 0; ``latency_s`` is the wall time of the whole ``complete`` call (queueing, the
batch, and on the first batch the model load: what the search waited).

Errors (one-line :class:`~evoengine.llm.types.LLMError`; nothing is retried):
``bad_request`` -- vLLM is not installed, or SamplingParams rejects a request's values;
``model`` -- ``llm.model`` or an adapter folder does not exist, an unknown adapter
name, or the engine failed to load (then for every later request too: not rebuilt);
``server`` -- ``LLM.chat`` raised (CUDA OOM, a model without a chat template, ...), for
every request of that call (the next call is made as usual), or the client was closed;
``malformed`` -- an output without text.

Limitations: ``llm.timeout_s`` does not apply (a running generation cannot be
interrupted); a cancelled caller's conversation is still generated if its batch had
started; each client owns its engine, so an ensemble of several ``llm=vllm`` models
needs their ``vllm_gpu_memory_utilization`` to add up to at most 1; the LoRA limits are
in :mod:`evoengine.llm.vllm_lora`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from evoengine.config.llm_schema import LLMConfig
from evoengine.llm.retry import one_line
from evoengine.llm.types import Completion, LLMError
from evoengine.llm.vllm_lora import (
    DEFAULT_LORA_RANK,
    LORA_RANKS,
    AdapterKey,
    LoRAAdapters,
    adapter_rank,
    existing_path,
    lora_rank_for,
    note_served_adapter,
    reset_served_adapter,
    served_adapter,
)

__all__ = ["BATCH_WINDOW_S", "DEFAULT_LORA_RANK", "LORA_RANKS", "MISSING_VLLM", "AdapterKey",
           "LoRAAdapters", "VLLMClient", "adapter_rank", "lora_rank_for",
           "reset_served_adapter", "served_adapter"]

log = logging.getLogger(__name__)

BATCH_WINDOW_S = 0.02  # how long the oldest queued request waits for others to join it
MISSING_VLLM = "llm.provider=vllm needs vLLM and a GPU: pip install 'evoengine[vllm]'"


@dataclass
class _Request:
    messages: list[dict[str, str]]
    params: Any  # SamplingParams
    adapter: AdapterKey | None
    future: asyncio.Future[tuple[str, int, int]]
    queued: float  # loop.time() when queued


def _import_vllm() -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]]:
    """``vllm.LLM``, ``vllm.SamplingParams`` and ``LoRARequest``, or a one-line error."""
    try:
        import vllm
        from vllm.lora.request import LoRARequest
    except ImportError:
        raise LLMError("bad_request", MISSING_VLLM) from None
    except Exception as exc:  # an install that fails to import (CUDA libraries, ...)
        raise LLMError("bad_request", one_line(
            f"{MISSING_VLLM} (importing vllm failed: {type(exc).__name__}: {exc})")) from None
    return vllm.LLM, vllm.SamplingParams, LoRARequest


class VLLMClient:
    """An :class:`~evoengine.llm.types.LLMClient` on an in-process ``vllm.LLM``.

    ``engine_factory``, ``sampling_params`` and ``lora_request`` default to
    ``vllm.LLM``, ``vllm.SamplingParams`` and ``vllm.lora.request.LoRARequest`` (tests
    pass stand-ins). ``enable_lora`` overrides whether the engine is built with LoRA
    (default: when an adapter is known at build time).
    """

    def __init__(self, config: LLMConfig, *,
                 engine_factory: Callable[..., Any] | None = None,
                 sampling_params: Callable[..., Any] | None = None,
                 lora_request: Callable[..., Any] | None = None,
                 enable_lora: bool | None = None,
                 batch_window_s: float = BATCH_WINDOW_S) -> None:
        if engine_factory is None or sampling_params is None or lora_request is None:
            llm_cls, params_cls, lora_cls = _import_vllm()
            engine_factory = engine_factory or llm_cls
            sampling_params = sampling_params or params_cls
            lora_request = lora_request or lora_cls
        self.config = config
        self.model = config.model
        self._model_path = existing_path(config.model, "llm.model")
        self._engine_factory = engine_factory
        self._params_cls = sampling_params
        self._lora_cls = lora_request
        self._window = max(0.0, batch_window_s)
        self._lora = LoRAAdapters(config.lora_adapters, config.lora_adapter, enable_lora)
        self._engine: Any = None
        self._engine_error: str | None = None
        self._pending: deque[_Request] = deque()
        self._wakeup: asyncio.Event | None = None
        self._batcher: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self.chat_calls = 0  # LLM.chat calls made (one per batch and adapter)

    # -- adapters -------------------------------------------------------------------

    @property
    def adapter(self) -> str | None:
        """The adapter later requests sample with (None: the base model)."""
        return self._lora.active

    @property
    def adapters(self) -> dict[str, str]:
        """Known adapters: name -> folder."""
        return self._lora.folders()

    def use_adapter(self, name: str | None) -> None:
        """Sample requests queued from now on with adapter ``name`` (None: base model)."""
        self._lora.use(name)

    def add_adapter(self, name: str, path: str) -> int:
        """Make adapter folder ``path`` known as ``name`` (it does not switch to it: call
        :meth:`use_adapter`); returns its LoRA int id."""
        return self._lora.add(name, path)

    def prepare_lora(self, rank: int) -> None:
        """Build the engine with LoRA on and a ``max_lora_rank`` that holds ``rank``, so
        adapters of that rank can be added later (before the first request only)."""
        self._lora.prepare(rank)

    # -- the client -----------------------------------------------------------------

    async def complete(self, messages: list[dict[str, str]], *, temperature: float,
                       max_tokens: int, seed: int | None = None) -> Completion:
        if self._closed:
            raise LLMError("server", "the vLLM client is closed")
        start = time.perf_counter()
        try:
            params = self._params_cls(temperature=temperature, max_tokens=max_tokens,
                                      seed=seed)
        except (TypeError, ValueError) as exc:
            raise LLMError("bad_request", one_line(
                f"vLLM rejected the sampling parameters: {exc}")) from None
        loop = asyncio.get_running_loop()
        self._ensure_batcher(loop)
        assert self._wakeup is not None
        future: asyncio.Future[tuple[str, int, int]] = loop.create_future()
        adapter = self._lora.key()
        note_served_adapter(adapter)
        self._pending.append(_Request([dict(m) for m in messages], params, adapter, future,
                                      loop.time()))
        self._wakeup.set()
        text, prompt_tokens, completion_tokens = await future
        return Completion(text=text, model=self.model, prompt_tokens=prompt_tokens,
                          completion_tokens=completion_tokens,
                          latency_s=time.perf_counter() - start, cost=0.0)

    async def close(self) -> None:
        """Stop the batcher, fail queued requests, and release the engine."""
        if self._closed:
            return
        self._closed = True
        task = self._batcher
        if task is not None and not task.done():
            task.cancel()
            if self._loop is asyncio.get_running_loop():
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._fail(list(self._pending), "server", "the vLLM client was closed")
        self._pending.clear()
        if self._engine is not None:
            self._engine = None
            gc.collect()  # vLLM frees GPU memory when the engine is collected

    async def __aenter__(self) -> VLLMClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- batching -------------------------------------------------------------------

    def _ensure_batcher(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is not loop:
            self._pending.clear()  # requests of an event loop that has gone away
        if self._batcher is None or self._batcher.done() or self._loop is not loop:
            self._loop = loop
            self._wakeup = asyncio.Event()
            self._batcher = loop.create_task(self._run_batches(), name="vllm-batcher")

    async def _run_batches(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch(loop)
            try:
                await self._serve(batch)
            except asyncio.CancelledError:
                self._fail(batch, "server", "the vLLM client was closed")
                raise
            except Exception as exc:  # never leave a caller waiting
                log.exception("vLLM batch failed")
                self._fail(batch, "server", f"vLLM batch failed: {type(exc).__name__}: {exc}")

    async def _next_batch(self, loop: asyncio.AbstractEventLoop) -> list[_Request]:
        """Wait for requests; take up to ``vllm_batch_size`` once that many are queued
        or the oldest has waited ``batch_window_s``."""
        assert self._wakeup is not None
        size = self.config.vllm_batch_size
        while True:
            while not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
            while len(self._pending) < size:
                remaining = self._pending[0].queued + self._window - loop.time()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            batch: list[_Request] = []
            while self._pending and len(batch) < size:
                request = self._pending.popleft()
                if not request.future.done():  # a cancelled caller is skipped
                    batch.append(request)
            if batch:
                return batch

    async def _serve(self, batch: list[_Request]) -> None:
        try:
            engine = await self._get_engine()
        except LLMError as error:
            self._fail(batch, error.kind, str(error))
            return
        groups: dict[AdapterKey | None, list[_Request]] = {}
        for request in batch:
            groups.setdefault(request.adapter, []).append(request)
        for adapter, requests in groups.items():
            lora = None if adapter is None else self._lora_cls(*adapter)
            conversations = [r.messages for r in requests]
            params = [r.params for r in requests]
            self.chat_calls += 1
            try:
                outputs = await asyncio.to_thread(self._chat, engine, conversations,
                                                  params, lora)
            except Exception as exc:
                self._fail(requests, "server", f"vLLM generation failed for a batch of "
                           f"{len(requests)}: {type(exc).__name__}: {exc}")
                continue
            if not isinstance(outputs, (list, tuple)) or len(outputs) != len(requests):
                self._fail(requests, "malformed", "vLLM returned a different number of "
                           f"outputs than the {len(requests)} conversations it was given")
                continue
            for request, output in zip(requests, outputs, strict=True):
                self._resolve(request, output)

    @staticmethod
    def _chat(engine: Any, conversations: list[list[dict[str, str]]], params: list[Any],
              lora: Any) -> Any:
        return engine.chat(conversations, params, use_tqdm=False, lora_request=lora)

    async def _get_engine(self) -> Any:
        if self._engine is not None:
            return self._engine
        if self._engine_error is not None:
            raise LLMError("model", self._engine_error)
        lora_options = self._lora.engine_options()
        kwargs: dict[str, Any] = {
            "model": self._model_path,
            "gpu_memory_utilization": self.config.vllm_gpu_memory_utilization,
            **lora_options}
        log.info("loading %s with vLLM (%s)", self._model_path,
                 ", ".join(f"{k}={v}" for k, v in kwargs.items() if k != "model"))
        try:
            engine = await asyncio.to_thread(lambda: self._engine_factory(**kwargs))
        except Exception as exc:
            self._engine_error = one_line(f"vLLM could not load llm.model={self.model!r}: "
                                          f"{type(exc).__name__}: {exc}")
            raise LLMError("model", self._engine_error) from None
        self._engine = engine
        self._lora.engine_built(lora_options)
        return engine

    @staticmethod
    def _resolve(request: _Request, output: Any) -> None:
        if request.future.done():
            return
        try:
            completion = output.outputs[0]
            text = completion.text
            prompt_tokens = len(output.prompt_token_ids or ())
            completion_tokens = len(completion.token_ids or ())
        except (AttributeError, IndexError, TypeError):
            text = None
        if not isinstance(text, str):
            request.future.set_exception(LLMError("malformed", "vLLM returned an output "
                                                  "without text"))
            return
        request.future.set_result((text, prompt_tokens, completion_tokens))

    @staticmethod
    def _fail(requests: list[_Request], kind: str, message: str) -> None:
        for request in requests:
            if request.future.done():
                continue
            # RuntimeError: its event loop is closed; nobody is waiting
            with contextlib.suppress(RuntimeError):
                request.future.set_exception(LLMError(kind, one_line(message)))
