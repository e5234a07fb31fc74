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

LoRA. ``llm.lora_adapters`` maps names to adapter folders (PEFT format) and
``llm.lora_adapter`` names the one to sample with (None: the base model). Configured
adapters get the int id ``1 + their index among the sorted names``; adapters added
later with :meth:`VLLMClient.add_adapter` get the next unused id, and re-adding a name
with a different folder gives it a new id too (vLLM caches loaded weights by id, so an
id is never reused for other weights). :meth:`VLLMClient.use_adapter` switches the
adapter for requests queued from then on; requests already queued keep theirs (a batch
that mixes adapters is split into one ``chat`` call per adapter). :func:`served_adapter`
tells the caller which adapter its last request in this task was queued with (the RL
schedule labels each child with it). :meth:`VLLMClient.prepare_lora` builds the engine
with LoRA even before any adapter exists (``rl.enabled`` adds them during the run).
The engine is built with ``enable_lora=True`` only when an adapter is known by then
(configured, or added before the first request), with ``max_lora_rank`` the smallest
size vLLM accepts that holds the largest ``r`` in the adapters' ``adapter_config.json``
(16 when unknown).

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
needs their ``vllm_gpu_memory_utilization`` to add up to at most 1; an adapter cannot
be added to an engine built without LoRA, nor one above the engine's ``max_lora_rank``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evoengine.config.schema import LLMConfig
from evoengine.llm.retry import one_line
from evoengine.llm.types import Completion, LLMError

log = logging.getLogger(__name__)

BATCH_WINDOW_S = 0.02  # how long the oldest queued request waits for others to join it
MISSING_VLLM = "llm.provider=vllm needs vLLM and a GPU: pip install 'evoengine[vllm]'"
LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM accepts
DEFAULT_LORA_RANK = 16
AdapterKey = tuple[str, int, str]  # (name, int id, folder): what a LoRARequest carries
# The adapter of the last request queued in this task (a context variable: each
# controller step is a task of its own, so concurrent steps do not see each other's).
_SERVED_ADAPTER: ContextVar[str | None] = ContextVar("evoengine_vllm_adapter", default=None)


def served_adapter() -> str | None:
    """The LoRA adapter the current task's last vLLM request was queued with."""
    return _SERVED_ADAPTER.get()


def reset_served_adapter() -> None:
    _SERVED_ADAPTER.set(None)


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


def _existing(path: str, what: str) -> str:
    """``path`` made absolute; LLMError("model") naming ``what`` when it does not exist."""
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise LLMError("model", one_line(f"{what}={path!r} does not exist: llm=vllm loads "
                                         "from a local path (download the model first)"))
    return str(resolved.resolve())


def adapter_rank(folder: str) -> int | None:
    """The LoRA rank ``r`` in ``folder/adapter_config.json``; None when unreadable."""
    try:
        rank = json.loads((Path(folder) / "adapter_config.json").read_text())["r"]
        return int(rank)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def lora_rank_for(ranks: list[int | None]) -> int:
    """The smallest ``max_lora_rank`` vLLM accepts that holds every known rank."""
    known = [rank for rank in ranks if rank is not None]
    need = max(known, default=DEFAULT_LORA_RANK)
    return next((size for size in LORA_RANKS if size >= need), need)


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
        self._model_path = _existing(config.model, "llm.model")
        self._engine_factory = engine_factory
        self._params_cls = sampling_params
        self._lora_cls = lora_request
        self._window = max(0.0, batch_window_s)
        self._adapters: dict[str, tuple[int, str]] = {}
        for index, name in enumerate(sorted(config.lora_adapters), start=1):
            folder = _existing(config.lora_adapters[name], f"llm.lora_adapters.{name}")
            self._adapters[name] = (index, folder)
        self._next_id = len(self._adapters) + 1
        self._active: str | None = None
        self.use_adapter(config.lora_adapter)
        self._enable_lora = enable_lora
        self._engine: Any = None
        self._engine_error: str | None = None
        self._engine_lora: bool | None = None  # LoRA on in the built engine
        self._engine_rank: int | None = None
        self._min_rank: int | None = None  # prepare_lora: adapters to come
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
        return self._active

    @property
    def adapters(self) -> dict[str, str]:
        """Known adapters: name -> folder."""
        return {name: folder for name, (_, folder) in self._adapters.items()}

    def use_adapter(self, name: str | None) -> None:
        """Sample requests queued from now on with adapter ``name`` (None: base model)."""
        if name is not None and name not in self._adapters:
            known = ", ".join(sorted(self._adapters)) or "none"
            raise LLMError("model", f"unknown LoRA adapter {name!r} (known: {known}); "
                                    "add it to llm.lora_adapters or call add_adapter")
        self._active = name

    def add_adapter(self, name: str, path: str) -> int:
        """Make adapter folder ``path`` known as ``name`` (it does not switch to it: call
        :meth:`use_adapter`); returns its LoRA int id."""
        folder = _existing(path, f"LoRA adapter {name}")
        if self._engine_lora is False:
            raise LLMError("bad_request", f"cannot add LoRA adapter {name!r}: the model was "
                           "loaded without LoRA (configure an adapter in llm.lora_adapters, "
                           "or add one before the first request)")
        rank = adapter_rank(folder)
        if self._engine_rank is not None and rank is not None and rank > self._engine_rank:
            raise LLMError("bad_request", f"LoRA adapter {name!r} has rank {rank}, above "
                           f"the loaded engine's max_lora_rank {self._engine_rank}")
        known = self._adapters.get(name)
        if known is not None and known[1] == folder:
            return known[0]
        self._adapters[name] = (self._next_id, folder)
        self._next_id += 1
        return self._next_id - 1

    def prepare_lora(self, rank: int) -> None:
        """Build the engine with LoRA on and a ``max_lora_rank`` that holds ``rank``, so
        adapters of that rank can be added later (before the first request only)."""
        if self._engine_lora is not None:
            raise LLMError("bad_request", "prepare_lora must be called before the first "
                                          "request (the engine is already loaded)")
        self._enable_lora = True
        self._min_rank = max(rank, self._min_rank or 0)

    def _adapter_key(self) -> AdapterKey | None:
        if self._active is None:
            return None
        lora_id, folder = self._adapters[self._active]
        return (self._active, lora_id, folder)

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
        adapter = self._adapter_key()
        _SERVED_ADAPTER.set(adapter[0] if adapter else None)
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
        enable = bool(self._adapters) if self._enable_lora is None else self._enable_lora
        kwargs: dict[str, Any] = {
            "model": self._model_path,
            "gpu_memory_utilization": self.config.vllm_gpu_memory_utilization,
            "enable_lora": enable}
        if enable:
            kwargs["max_lora_rank"] = lora_rank_for(
                [adapter_rank(folder) for _, folder in self._adapters.values()]
                + [self._min_rank])
        log.info("loading %s with vLLM (%s)", self._model_path,
                 ", ".join(f"{k}={v}" for k, v in kwargs.items() if k != "model"))
        try:
            engine = await asyncio.to_thread(lambda: self._engine_factory(**kwargs))
        except Exception as exc:
            self._engine_error = one_line(f"vLLM could not load llm.model={self.model!r}: "
                                          f"{type(exc).__name__}: {exc}")
            raise LLMError("model", self._engine_error) from None
        self._engine = engine
        self._engine_lora = enable
        self._engine_rank = kwargs.get("max_lora_rank")
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
