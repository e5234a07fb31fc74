"""Training steps with TRL + PEFT on a tiny random Llama built in the test (no download),
and the GRPO reward that scores sampled completions from the archive."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evoengine.config.rl_schema import RewardWeights, RLConfig
from evoengine.rl.grpo_reward import completion_reward, edit_check
from evoengine.rl.training import TrainingError, TrainSource, build_trainer, train_adapter

PARENT = ("import numpy as np\n\n\n# EVOLVE-BLOCK-START\ndef priority(item, bins):\n"
          "    return -(bins - item)\n# EVOLVE-BLOCK-END\n")
MESSAGES = [{"role": "system", "content": "You improve programs."},
            {"role": "user", "content": f"Improve this program:\n{PARENT}"}]
GOOD = ("```python\n# EVOLVE-BLOCK-START\ndef priority(item, bins):\n"
        "    return -(bins - item) * 2\n# EVOLVE-BLOCK-END\n```")
CRASH = GOOD.replace("return -(bins - item) * 2", "raise ValueError('broken')")
TINY = RLConfig(steps=1, batch_size=2, min_examples=1, lora_r=4, lora_alpha=8, lr=1e-2,
                lora_targets=["q_proj", "v_proj"], max_length=512, grpo_num_generations=2,
                grpo_max_completion_tokens=8)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("trl")  # the `rl` extra; .ci/run installs it, so this runs in CI
    from evoengine.rl.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", [PARENT, GOOD])


def _dpo_rows() -> list[dict]:
    return [{"prompt": MESSAGES, "chosen": [{"role": "assistant", "content": GOOD}],
             "rejected": [{"role": "assistant", "content": CRASH}], "meta": {}}] * 2


def _grpo_rows() -> list[dict]:
    return [{"prompt": MESSAGES, "parent_code": PARENT, "edit_kind": "full",
             "completions": [{"completion": GOOD, "reward": 1.0},
                             {"completion": CRASH, "reward": -1.0}]}] * 2


def _lora_weights(module) -> dict:
    return {name: p.detach().clone() for name, p in module.named_parameters()
            if "lora_" in name}


@pytest.mark.parametrize("method, rows", [("dpo", _dpo_rows()), ("grpo", _grpo_rows())])
def test_a_training_step_changes_the_adapter(model: Path, tmp_path: Path, method: str,
                                             rows: list[dict]) -> None:
    import torch

    trainer = build_trainer(rows, method, TINY, str(model), tmp_path / "work")
    before = _lora_weights(trainer.model)
    assert before, "the LoRA adapter wraps the target modules"
    trainer.train()
    after = _lora_weights(trainer.model)
    changed = [name for name in before if not torch.equal(before[name], after[name])]
    assert any("lora_B" in name for name in changed), f"{method}: nothing was learned"
    assert trainer.state.global_step == 1


def test_saved_adapter_loads_back_with_the_trained_weights(model: Path, tmp_path: Path
                                                           ) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "adapter"
    metadata = train_adapter(_dpo_rows(), "dpo", TINY, str(model), out,
                             TrainSource(data="rows.jsonl", run="r", evaluations=12))
    stored = json.loads((out / "evo_train.json").read_text())
    assert stored == metadata
    assert stored["steps"] == 1 and stored["run"] == "r" and stored["evaluations"] == 12
    assert stored["base_model"] == str(model.resolve()) and stored["lora"]["r"] == 4
    assert stored["loss"] == pytest.approx(stored["losses"][-1])
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 4

    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model), out)
    weights = _lora_weights(loaded)
    assert any(torch.count_nonzero(w) for name, w in weights.items() if "lora_B" in name)
    fresh = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model), out)
    for name, weight in _lora_weights(fresh).items():
        assert torch.equal(weight, weights[name])


def test_too_few_examples_is_a_clear_error(model: Path, tmp_path: Path) -> None:
    rl = RLConfig(min_examples=5)
    with pytest.raises(TrainingError, match="rl.min_examples=5"):
        build_trainer(_dpo_rows(), "dpo", rl, str(model), tmp_path)
    with pytest.raises(TrainingError, match="not a local Hugging Face model folder"):
        build_trainer(_dpo_rows(), "dpo", TINY, str(tmp_path / "nothing"), tmp_path)


def test_a_model_folder_transformers_cannot_load_is_a_clear_error(model: Path,
                                                                  tmp_path: Path) -> None:
    """config.json alone (tokenizer or weights missing) used to end in a traceback."""
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_bytes((model / "config.json").read_bytes())
    with pytest.raises(TrainingError) as error:
        build_trainer(_dpo_rows(), "dpo", TINY, str(broken), tmp_path / "work")
    message = str(error.value)
    assert message.startswith(f"rl.model_path={str(broken)!r}: transformers cannot load it (")
    assert message.endswith("give a complete Hugging Face model folder (config.json, "
                            "tokenizer files, weights)") and "\n" not in message


def test_grpo_reward_uses_the_archive_then_the_edit_check() -> None:
    weights = RewardWeights()
    known = [(GOOD, 0.8), (CRASH, -1.0)]
    assert completion_reward(GOOD + "\n", known, PARENT, "full", weights) == 0.8
    assert completion_reward(CRASH, known, PARENT, "full", weights) == -1.0
    near_good = GOOD.replace("* 2", "* 3")
    assert completion_reward(near_good, known, PARENT, "full", weights) > 0
    near_crash = CRASH.replace("broken", "broke")
    assert completion_reward(near_crash, known, PARENT, "full", weights) < -0.5
    # unseen replies: a failed edit, a no-op and an applicable edit, without a model
    assert edit_check("just prose", PARENT, "diff", weights) == -1.0
    same = GOOD.replace(" * 2", "")
    assert edit_check(same, PARENT, "full", weights) == -0.5
    assert edit_check(near_good, PARENT, "full", weights) == 0.0
    assert completion_reward("just prose", [], PARENT, "full", weights) == -1.0
