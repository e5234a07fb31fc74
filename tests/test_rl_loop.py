"""RL in the loop: `llm=vllm rl.enabled=true` trains an adapter after `rl.every`
evaluations, hands it to the running engine by name, and later children carry it.

vLLM and a GPU cannot exist here, so the engine is the test double of
tests/test_vllm_client.py (:class:`FakeEngine`), subclassed to answer with program
edits. Everything else is real: the run, the process sandbox, the archive, and the
training (`evo train` in a subprocess, TRL DPO on a tiny random Llama built locally).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from evoengine.cli.run_cmd import run_command
from evoengine.llm import vllm_client
from evoengine.rl.tiny_model import build_tiny_model
from tests.test_vllm_client import FakeEngine, FakeLoRARequest, FakeSamplingParams

pytest.importorskip("trl")  # the `rl` extra; .ci/run installs it, so this runs in CI


def _rewrite(body: str) -> str:
    return ("```python\n# EVOLVE-BLOCK-START\ndef priority(item, bins):\n"
            f"    {body}\n# EVOLVE-BLOCK-END\n```")


# In order: a crash and a valid child asked the same (seed) prompt, a much worse child,
# then distinct valid rewrites.
REPLIES = [_rewrite("raise ValueError('broken')"), _rewrite("return -(bins - item) * 2"),
           _rewrite("return (bins - item) * 2")] + [
    _rewrite(f"return -(bins - item) * {n}") for n in range(3, 30)]


class EditingEngine(FakeEngine):
    """FakeEngine (records the engine's keywords and every chat call) answering each
    conversation with the next of REPLIES instead of an echo."""

    replied = 0

    def chat(self, messages: list, sampling_params: list, *, use_tqdm: bool = True,
             lora_request: FakeLoRARequest | None = None) -> list:
        outputs = super().chat(messages, sampling_params, use_tqdm=use_tqdm,
                               lora_request=lora_request)
        for output in outputs:
            output.outputs[0].text = REPLIES[EditingEngine.replied]
            EditingEngine.replied += 1
        return outputs


def _rows(db: Path, query: str) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(query).fetchall()


@pytest.mark.slow  # about a minute on 2 cores: a run plus a training subprocess
def test_adapter_is_trained_swapped_in_by_name_and_labels_later_children(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    model = build_tiny_model(tmp_path / "tiny-model")
    engines: list[EditingEngine] = []

    def factory(**kwargs: Any) -> EditingEngine:
        engines.append(EditingEngine(kwargs, delay_s=0.0))
        return engines[-1]

    EditingEngine.replied = 0
    monkeypatch.setattr(vllm_client, "_import_vllm",
                        lambda: (factory, FakeSamplingParams, FakeLoRARequest))
    monkeypatch.chdir(tmp_path)
    code = run_command([
        "problem=bin_packing_quick", "llm=vllm", f"llm.model={model}", "ui=none",
        "sandbox=process", "name=rl", "search.num_islands=1", "search.llm_concurrency=1",
        "search.eval_concurrency=1", "search.max_evaluations=7",
        "llm.edit_probabilities.diff=0", "llm.edit_probabilities.crossover=0",
        "rl.enabled=true", "rl.every=4", "rl.pause=true", "rl.method=dpo", "rl.steps=1",
        "rl.batch_size=1", "rl.min_examples=1", "rl.lora_r=4", "rl.lora_alpha=8",
        "rl.lora_targets=[q_proj,v_proj]", "rl.max_length=8192",
        "rl.dpo_score_percentile=10"])
    assert code == 0
    assert "rl: training a LoRA adapter (dpo) every 4 evaluations" in capsys.readouterr().out
    run_dir = tmp_path / "runs" / "rl"
    adapter = run_dir / "adapters" / "rl-1"
    log = (run_dir / "adapters" / "rl-1.log").read_text()
    assert (adapter / "adapter_config.json").is_file(), log
    metadata = json.loads((adapter / "evo_train.json").read_text())
    assert metadata["run"] == "rl" and metadata["method"] == "dpo"
    assert metadata["evaluations"] == 4 and metadata["steps"] == 1
    assert metadata["base_model"] == str(model.resolve()) and metadata["examples"] >= 1

    # the engine was built once, with LoRA on, and got the adapter by name: no restart
    assert len(engines) == 1
    assert engines[0].kwargs["enable_lora"] is True and engines[0].kwargs["max_lora_rank"] == 8
    loras = [call.lora for call in engines[0].calls]
    assert loras[:3] == [None, None, None]
    assert loras[3:] and all(lora == FakeLoRARequest("rl-1", 1, str(adapter.resolve()))
                             for lora in loras[3:])

    # the archive says which adapter produced each child
    rows = _rows(run_dir / "archive.db",
                 "SELECT step, adapter FROM mutation_calls ORDER BY step")
    assert [adapter for _, adapter in rows[:3]] == [None, None, None]
    assert len(rows) > 3 and all(adapter == "rl-1" for _, adapter in rows[3:])
    assert _rows(run_dir / "archive.db", "SELECT COUNT(*) FROM evaluations "
                 "WHERE split='train'")[0][0] == 7
