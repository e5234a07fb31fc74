"""`llm=vllm`: batching, per-request sampling, LoRA adapters and failures of VLLMClient.

vLLM and a GPU are not available here, so every test but the last gives the client a
test double for the engine (:class:`FakeEngine`) and stand-ins for ``SamplingParams``
and ``LoRARequest``. The last test (marker ``gpu``) runs a real small model and is
skipped without vLLM, CUDA, or a local model folder.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from evoengine.config.llm_schema import LLMConfig
from evoengine.llm.factory import model_client
from evoengine.llm.reply_guard import ReplyGuard
from evoengine.llm.types import LLMError
from evoengine.llm.vllm_client import MISSING_VLLM, VLLMClient, lora_rank_for


@dataclass(frozen=True)
class FakeSamplingParams:
    """Stands in for ``vllm.SamplingParams`` (same keywords; rejects what it rejects)."""

    temperature: float
    max_tokens: int
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be non-negative, got {self.temperature}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}")


@dataclass(frozen=True)
class FakeLoRARequest:
    """Stands in for ``vllm.lora.request.LoRARequest(lora_name, lora_int_id, lora_path)``."""

    lora_name: str
    lora_int_id: int
    lora_path: str


@dataclass
class ChatCall:
    conversations: list[list[dict[str, str]]]
    params: list[FakeSamplingParams]
    lora: FakeLoRARequest | None
    use_tqdm: bool


@dataclass
class FakeEngine:
    """A test double for ``vllm.LLM``: model weights and a GPU cannot exist here.

    Records the constructor's keywords and every ``chat()`` call, and answers each
    conversation with ``reply to <last message>`` (its prompt has one token per word,
    its completion one token per word of the reply). ``fail_next`` makes that many
    calls raise, as a CUDA error would.
    """

    kwargs: dict[str, Any]
    built_in: str = field(default_factory=lambda: threading.current_thread().name)
    calls: list[ChatCall] = field(default_factory=list)
    fail_next: int = 0
    delay_s: float = 0.01

    def chat(self, messages: list[list[dict[str, str]]], sampling_params: list[Any], *,
             use_tqdm: bool = True, lora_request: FakeLoRARequest | None = None) -> list:
        self.calls.append(ChatCall(messages, list(sampling_params), lora_request, use_tqdm))
        time.sleep(self.delay_s)  # generation takes time; the event loop keeps going
        if self.fail_next:
            self.fail_next -= 1
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        outputs = []
        for conversation in messages:
            prompt = " ".join(m["content"] for m in conversation)
            text = f"reply to {conversation[-1]['content']}"
            outputs.append(SimpleNamespace(
                prompt_token_ids=list(range(len(prompt.split()))),
                outputs=[SimpleNamespace(text=text, token_ids=[7] * len(text.split()))]))
        return outputs


class Harness:
    """A VLLMClient on a FakeEngine, with a model folder in ``tmp_path``."""

    def __init__(self, tmp_path: Path, *, engine_error: Exception | None = None,
                 **config: Any) -> None:
        model = tmp_path / "model"
        model.mkdir(exist_ok=True)
        self.config = LLMConfig(provider="vllm", model=str(model), **config)
        self.engines: list[FakeEngine] = []
        self.engine_error = engine_error
        self.client = VLLMClient(self.config, engine_factory=self._factory,
                                 sampling_params=FakeSamplingParams,
                                 lora_request=FakeLoRARequest)

    def _factory(self, **kwargs: Any) -> FakeEngine:
        if self.engine_error is not None:
            self.engines.append(FakeEngine(kwargs))
            raise self.engine_error
        engine = FakeEngine(kwargs)
        self.engines.append(engine)
        return engine

    @property
    def calls(self) -> list[ChatCall]:
        return [call for engine in self.engines for call in engine.calls]

    def ask(self, text: str, **kw: Any):
        params = {"temperature": 0.7, "max_tokens": 64, **kw}
        return self.client.complete([{"role": "user", "content": text}], **params)


async def _settle(*coroutines: Any) -> list[Any]:
    return await asyncio.gather(*coroutines, return_exceptions=True)


def _adapter(root: Path, name: str, rank: int | None = None) -> str:
    folder = root / name
    folder.mkdir()
    if rank is not None:
        (folder / "adapter_config.json").write_text(json.dumps({"r": rank}))
    return str(folder)


# -- batching ---------------------------------------------------------------------------

def test_eight_concurrent_calls_are_one_batched_chat_call(tmp_path: Path) -> None:
    h = Harness(tmp_path, vllm_batch_size=8)
    results = asyncio.run(_settle(*(h.ask(f"task {i}") for i in range(8))))
    assert len(h.engines) == 1 and len(h.calls) == 1
    call = h.calls[0]
    assert len(call.conversations) == 8 and call.use_tqdm is False and call.lora is None
    assert [c[-1]["content"] for c in call.conversations] == [f"task {i}" for i in range(8)]
    for i, completion in enumerate(results):
        assert completion.text == f"reply to task {i}"
        assert completion.model == h.config.model
        assert (completion.prompt_tokens, completion.completion_tokens) == (2, 4)
        assert completion.cost == 0.0 and completion.latency_s > 0


def test_batch_size_three_serves_seven_requests_as_three_three_one(tmp_path: Path) -> None:
    h = Harness(tmp_path, vllm_batch_size=3)
    results = asyncio.run(_settle(*(h.ask(f"t{i}") for i in range(7))))
    assert [len(call.conversations) for call in h.calls] == [3, 3, 1]
    assert [r.text for r in results] == [f"reply to t{i}" for i in range(7)]
    assert len(h.engines) == 1


def test_requests_further_apart_than_the_window_are_separate_batches(tmp_path: Path) -> None:
    h = Harness(tmp_path, vllm_batch_size=8)

    async def go() -> list[Any]:
        first = [asyncio.ensure_future(h.ask(f"a{i}")) for i in range(2)]
        await asyncio.sleep(0.3)  # well past the 20 ms window, and the first batch
        late = await h.ask("late")
        return [*(await asyncio.gather(*first)), late]

    results = asyncio.run(go())
    assert [len(call.conversations) for call in h.calls] == [2, 1]
    assert [r.text for r in results] == ["reply to a0", "reply to a1", "reply to late"]


def test_each_request_keeps_its_own_sampling_params(tmp_path: Path) -> None:
    h = Harness(tmp_path, vllm_batch_size=4)
    asks = [h.ask("s0", temperature=0.0, max_tokens=10, seed=11),
            h.ask("s1", temperature=1.3, max_tokens=20),
            h.ask("s2", temperature=0.5, max_tokens=30, seed=33)]
    asyncio.run(_settle(*asks))
    (call,) = h.calls
    by_text = {conv[-1]["content"]: params for conv, params in
               zip(call.conversations, call.params, strict=True)}
    assert by_text == {"s0": FakeSamplingParams(0.0, 10, 11),
                       "s1": FakeSamplingParams(1.3, 20, None),
                       "s2": FakeSamplingParams(0.5, 30, 33)}


def test_engine_is_built_once_in_a_worker_thread_with_the_config(tmp_path: Path) -> None:
    h = Harness(tmp_path, vllm_batch_size=2, vllm_gpu_memory_utilization=0.6)

    async def go() -> None:
        await h.ask("one")
        await _settle(h.ask("two"), h.ask("three"))
        await h.ask("four")

    asyncio.run(go())
    (engine,) = h.engines
    assert engine.kwargs == {"model": str((tmp_path / "model").resolve()),
                             "gpu_memory_utilization": 0.6, "enable_lora": False}
    assert engine.built_in != threading.main_thread().name
    assert [len(call.conversations) for call in engine.calls] == [1, 2, 1]


def test_the_client_serves_a_second_event_loop_with_the_same_engine(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    assert asyncio.run(h.ask("first loop")).text == "reply to first loop"
    assert asyncio.run(h.ask("second loop")).text == "reply to second loop"
    assert len(h.engines) == 1 and len(h.calls) == 2


def test_a_cancelled_caller_does_not_disturb_the_others(tmp_path: Path) -> None:
    h = Harness(tmp_path, vllm_batch_size=4)

    async def go() -> list[Any]:
        tasks = [asyncio.ensure_future(h.ask(f"c{i}")) for i in range(3)]
        await asyncio.sleep(0)
        tasks[1].cancel()
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(go())
    assert isinstance(results[1], asyncio.CancelledError)
    assert [results[0].text, results[2].text] == ["reply to c0", "reply to c2"]
    assert [c[-1]["content"] for c in h.calls[0].conversations] == ["c0", "c2"]


# -- LoRA -------------------------------------------------------------------------------

def test_configured_adapter_is_sent_with_a_stable_id(tmp_path: Path) -> None:
    root = tmp_path / "adapters"
    root.mkdir()
    folders = {"zeta": _adapter(root, "zeta", rank=8), "alpha": _adapter(root, "alpha", 32)}
    h = Harness(tmp_path, lora_adapters=folders, lora_adapter="zeta")
    asyncio.run(h.ask("x"))
    (engine,) = h.engines
    assert engine.kwargs["enable_lora"] is True and engine.kwargs["max_lora_rank"] == 32
    assert h.calls[0].lora == FakeLoRARequest("zeta", 2, str(Path(folders["zeta"]).resolve()))


def test_use_adapter_and_add_adapter_switch_later_requests(tmp_path: Path) -> None:
    root = tmp_path / "adapters"
    root.mkdir()
    h = Harness(tmp_path, lora_adapters={"a": _adapter(root, "a"), "b": _adapter(root, "b")})
    step = _adapter(root, "step-100", rank=16)

    async def go() -> None:
        await h.ask("base")
        h.client.use_adapter("b")
        await h.ask("with b")
        assert h.client.add_adapter("step-100", step) == 3
        assert h.client.adapter == "b"  # adding does not switch
        h.client.use_adapter("step-100")
        await h.ask("with step-100")
        h.client.use_adapter(None)
        await h.ask("base again")

    asyncio.run(go())
    loras = [call.lora for call in h.calls]
    assert loras[0] is None and loras[3] is None
    assert (loras[1].lora_name, loras[1].lora_int_id) == ("b", 2)
    assert loras[2] == FakeLoRARequest("step-100", 3, str(Path(step).resolve()))
    # the same name with new weights gets a new id (vLLM caches weights by id)
    assert h.client.add_adapter("step-100", step) == 3
    assert h.client.add_adapter("step-100", _adapter(root, "step-200")) == 4
    with pytest.raises(LLMError) as unknown:
        h.client.use_adapter("nope")
    assert unknown.value.kind == "model" and "nope" in str(unknown.value)
    with pytest.raises(LLMError) as missing:
        h.client.add_adapter("gone", str(root / "gone"))
    assert missing.value.kind == "model"


def test_a_batch_mixing_adapters_is_split_per_adapter(tmp_path: Path) -> None:
    root = tmp_path / "adapters"
    root.mkdir()
    h = Harness(tmp_path, lora_adapters={"a": _adapter(root, "a")})

    async def go() -> list[Any]:
        first = asyncio.ensure_future(h.ask("base"))
        await asyncio.sleep(0)
        h.client.use_adapter("a")
        return await asyncio.gather(first, h.ask("tuned"))

    results = asyncio.run(go())
    assert [r.text for r in results] == ["reply to base", "reply to tuned"]
    assert [(len(c.conversations), c.lora and c.lora.lora_name) for c in h.calls] == [
        (1, None), (1, "a")]


def test_adapters_and_lora_switch_on_the_built_engine(tmp_path: Path) -> None:
    root = tmp_path / "adapters"
    root.mkdir()
    plain = Harness(tmp_path)
    asyncio.run(plain.ask("x"))  # built without LoRA: no adapter can join later
    with pytest.raises(LLMError) as late:
        plain.client.add_adapter("a", _adapter(root, "a"))
    assert late.value.kind == "bad_request"

    early = Harness(tmp_path)
    early.client.add_adapter("b", _adapter(root, "b", rank=64))  # before the first request
    asyncio.run(early.ask("y"))
    assert early.engines[0].kwargs["enable_lora"] is True
    assert early.engines[0].kwargs["max_lora_rank"] == 64
    with pytest.raises(LLMError, match="rank 128"):
        early.client.add_adapter("big", _adapter(root, "big", rank=128))


def test_lora_rank_sizes() -> None:
    assert lora_rank_for([]) == 16 and lora_rank_for([None]) == 16
    assert lora_rank_for([4, None]) == 8 and lora_rank_for([16, 33]) == 64
    assert lora_rank_for([300]) == 320


# -- failures ---------------------------------------------------------------------------

def test_a_failing_chat_fails_its_batch_and_the_next_batch_works(tmp_path: Path) -> None:
    h = Harness(tmp_path, vllm_batch_size=4)

    async def go() -> tuple[list[Any], list[Any]]:
        await h.ask("warm up")
        h.engines[0].fail_next = 1
        failed = await _settle(*(h.ask(f"f{i}") for i in range(3)))
        return failed, await _settle(h.ask("again"), h.ask("and again"))

    failed, recovered = asyncio.run(go())
    for error in failed:
        assert isinstance(error, LLMError) and error.kind == "server"
        assert "CUDA error" in str(error) and "\n" not in str(error)
    assert [r.text for r in recovered] == ["reply to again", "reply to and again"]
    assert len(h.engines) == 1


def test_an_engine_that_fails_to_load_fails_every_request_once(tmp_path: Path) -> None:
    h = Harness(tmp_path, engine_error=RuntimeError("No CUDA GPUs are available"))

    async def go() -> list[Any]:
        return [*await _settle(h.ask("a"), h.ask("b")), *await _settle(h.ask("c"))]

    errors = asyncio.run(go())
    assert all(isinstance(e, LLMError) and e.kind == "model" for e in errors)
    assert "No CUDA GPUs" in str(errors[0]) and "llm.model" in str(errors[0])
    assert len(h.engines) == 1  # not rebuilt for every request


def test_sampling_values_vllm_rejects_are_a_bad_request(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    with pytest.raises(LLMError) as raised:
        asyncio.run(h.ask("x", temperature=-1.0))
    assert raised.value.kind == "bad_request" and "temperature" in str(raised.value)


def test_an_output_without_text_is_malformed(tmp_path: Path) -> None:
    h = Harness(tmp_path)

    async def go() -> Any:
        await h.ask("warm up")
        h.engines[0].chat = lambda *a, **k: [SimpleNamespace(outputs=[],  # type: ignore
                                                             prompt_token_ids=[1])]
        return await _settle(h.ask("x"))

    (error,) = asyncio.run(go())
    assert isinstance(error, LLMError) and error.kind == "malformed"


def test_close_fails_queued_requests_and_later_calls(tmp_path: Path) -> None:
    h = Harness(tmp_path)

    async def go() -> list[Any]:
        await h.ask("warm up")
        h.engines[0].delay_s = 0.3
        pending = [asyncio.ensure_future(h.ask(f"p{i}")) for i in range(2)]
        await asyncio.sleep(0.1)  # the batch is generating
        await h.client.close()
        return [*await asyncio.gather(*pending, return_exceptions=True),
                *await _settle(h.ask("after"))]

    errors = asyncio.run(go())
    assert all(isinstance(e, LLMError) and e.kind == "server" for e in errors)
    assert "closed" in str(errors[-1])


def test_missing_vllm_is_a_one_line_error(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ImportError
    with pytest.raises(LLMError) as raised:
        VLLMClient(LLMConfig(provider="vllm", model=str(tmp_path)))
    assert raised.value.kind == "bad_request" and str(raised.value) == MISSING_VLLM
    with pytest.raises(LLMError):
        model_client(LLMConfig(provider="vllm", model=str(tmp_path)))


def test_missing_model_path_names_llm_model(tmp_path: Path) -> None:
    with pytest.raises(LLMError) as raised:
        VLLMClient(LLMConfig(provider="vllm", model=str(tmp_path / "no-such-model")),
                   engine_factory=FakeEngine, sampling_params=FakeSamplingParams,
                   lora_request=FakeLoRARequest)
    assert raised.value.kind == "model"
    assert "llm.model" in str(raised.value) and "\n" not in str(raised.value)
    with pytest.raises(LLMError, match="llm.lora_adapters.x"):
        Harness(tmp_path, lora_adapters={"x": str(tmp_path / "nothing")})


def test_model_client_builds_the_vllm_client_from_the_vllm_package(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default wiring: ``vllm.LLM``, ``vllm.SamplingParams`` and ``LoRARequest``
    come from the package (here a stand-in module, since vLLM is not installed)."""
    engines: list[FakeEngine] = []

    def llm(**kwargs: Any) -> FakeEngine:
        engines.append(FakeEngine(kwargs))
        return engines[-1]

    vllm = types.ModuleType("vllm")
    vllm.LLM = llm  # type: ignore[attr-defined]
    vllm.SamplingParams = FakeSamplingParams  # type: ignore[attr-defined]
    lora_pkg, request_mod = types.ModuleType("vllm.lora"), types.ModuleType("vllm.lora.request")
    request_mod.LoRARequest = FakeLoRARequest  # type: ignore[attr-defined]
    lora_pkg.request = request_mod  # type: ignore[attr-defined]
    vllm.lora = lora_pkg  # type: ignore[attr-defined]
    for name, module in (("vllm", vllm), ("vllm.lora", lora_pkg),
                         ("vllm.lora.request", request_mod)):
        monkeypatch.setitem(sys.modules, name, module)
    adapter = _adapter(tmp_path, "run1")
    config = LLMConfig(provider="vllm", model=str(tmp_path), lora_adapters={"run1": adapter},
                       lora_adapter="run1")
    client = model_client(config)
    assert isinstance(client, ReplyGuard) and isinstance(client.inner, VLLMClient)

    async def go() -> Any:
        try:
            return await client.complete([{"role": "user", "content": "hi"}],
                                         temperature=0.2, max_tokens=8, seed=1)
        finally:
            await client.close()

    assert asyncio.run(go()).text == "reply to hi"
    assert engines[0].calls[0].lora == FakeLoRARequest("run1", 1, str(Path(adapter).resolve()))


# -- a real model -----------------------------------------------------------------------

def _local_test_model() -> str | None:
    """``$EVOENGINE_VLLM_TEST_MODEL``, else a small instruct model already in the Hugging
    Face cache (nothing is downloaded)."""
    path = os.environ.get("EVOENGINE_VLLM_TEST_MODEL")
    if path:
        return path if Path(path).exists() else None
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download("Qwen/Qwen2.5-0.5B-Instruct", local_files_only=True)
    except Exception:
        return None


@pytest.mark.gpu
def test_real_small_model_on_a_gpu() -> None:
    pytest.importorskip("vllm")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    model = _local_test_model()
    if model is None:
        pytest.skip("no local model: set EVOENGINE_VLLM_TEST_MODEL to a chat model folder")
    client = VLLMClient(LLMConfig(provider="vllm", model=model, vllm_batch_size=4,
                                  vllm_gpu_memory_utilization=0.5))
    messages = [{"role": "user", "content": "Write a Python function that adds two numbers."}]

    async def go() -> list[Any]:
        try:
            return await asyncio.gather(*(
                client.complete(messages, temperature=1.0, max_tokens=48, seed=seed)
                for seed in (1, 1, 2, 3)))
        finally:
            await client.close()

    results = asyncio.run(go())
    assert client.chat_calls == 1
    assert all(r.text and 0 < r.completion_tokens <= 48 and r.prompt_tokens > 0
               for r in results)
    assert results[0].text == results[1].text  # the same seed samples the same reply
