"""The real vLLM engine with the tiny model and a LoRA swap (marker ``gpu``).

Skipped only where CUDA or vLLM is missing; everything runs for real where they exist:
an adapter trained with TRL on the tiny model is handed to a running engine by name.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from evoengine.config.llm_schema import LLMConfig
from evoengine.config.rl_schema import RLConfig

pytestmark = pytest.mark.gpu


def _require_gpu() -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    pytest.importorskip("vllm")
    pytest.importorskip("trl")


def test_adapter_swapped_into_a_running_vllm_engine(tmp_path: Path) -> None:
    _require_gpu()
    from evoengine.llm.vllm_client import VLLMClient, reset_served_adapter, served_adapter
    from evoengine.rl.tiny_model import build_tiny_model
    from evoengine.rl.training import TrainSource, train_adapter

    model = build_tiny_model(tmp_path / "tiny", hidden=128)
    messages = [{"role": "system", "content": "You improve programs."},
                {"role": "user", "content": "def priority(item, bins): return -(bins - item)"}]
    rows = [{"prompt": messages, "chosen": [{"role": "assistant", "content": "return -bins"}],
             "rejected": [{"role": "assistant", "content": "raise ValueError"}]}] * 2
    rl = RLConfig(steps=1, batch_size=2, min_examples=1, lora_r=8, lora_alpha=16,
                  lora_targets=["q_proj", "v_proj"], max_length=512)
    adapter = tmp_path / "rl-1"
    train_adapter(rows, "dpo", rl, str(model), adapter, TrainSource(data="inline"))

    config = LLMConfig(provider="vllm", model=str(model), vllm_gpu_memory_utilization=0.3,
                       max_tokens=16)
    client = VLLMClient(config)
    client.prepare_lora(rl.lora_r)

    async def scenario() -> tuple[str | None, str | None]:
        reset_served_adapter()
        first = await client.complete(messages, temperature=0.0, max_tokens=16, seed=1)
        before = served_adapter()
        assert isinstance(first.text, str)
        client.add_adapter("rl-1", str(adapter))
        client.use_adapter("rl-1")
        second = await client.complete(messages, temperature=0.0, max_tokens=16, seed=1)
        assert isinstance(second.text, str) and second.completion_tokens >= 1
        after = served_adapter()
        await client.close()
        return before, after

    before, after = asyncio.run(scenario())
    assert (before, after) == (None, "rl-1")
    assert client.chat_calls == 2  # one engine, no restart: the adapter came by name
