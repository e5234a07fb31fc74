"""Fit a LoRA adapter on an exported dataset with TRL and PEFT (``evo train``).

The base model (a local Hugging Face folder) stays frozen; a fresh LoRA adapter
(``rl.lora_r``, ``rl.lora_alpha``, ``rl.lora_dropout`` on ``rl.lora_targets``) is trained
for ``rl.steps`` optimiser steps with DPOTrainer (the reference model is the base with
the adapter switched off) or GRPOTrainer (rewards from
:mod:`evoengine.rl.grpo_reward`). Each training starts from the base model on all the
data so far, so adapters never drift on their own outputs. The adapter is saved in
PEFT format (what vLLM's ``LoRARequest`` loads) with ``evo_train.json`` beside it: the
base model, the data, steps, seconds, losses, the run and its evaluation count.

On a GPU the model is trained in bfloat16 where supported; on a CPU in float32.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from evoengine.config.rl_schema import RLConfig
from evoengine.errors import UserError, first_line
from evoengine.rl.grpo_reward import archive_reward, known_table

METADATA_FILE = "evo_train.json"
METHOD_FORMAT = {"dpo": "dpo", "grpo": "grpo"}


class TrainingError(UserError):
    """Training cannot start as asked; the message says what to change."""


@dataclass
class TrainSource:
    """Where the examples came from, for the metadata file."""

    data: str  # the JSONL file or the run folder / database URL
    run: str | None = None
    evaluations: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def check_model_folder(model_path: str) -> Path:
    folder = Path(model_path).expanduser()
    if not (folder / "config.json").is_file():
        raise TrainingError(f"rl.model_path={model_path!r} is not a local Hugging Face model "
                            "folder (no config.json); download the model first, e.g. "
                            "`huggingface-cli download Qwen/Qwen2.5-Coder-1.5B-Instruct "
                            "--local-dir /models/qwen2.5-coder-1.5b`")
    return folder.resolve()


def training_rows(rows: list[dict[str, Any]], method: str) -> list[dict[str, Any]]:
    """Keep the columns the trainer reads (``meta`` is for people)."""
    if method == "dpo":
        if rows and "chosen" not in rows[0]:
            raise TrainingError("rl.method=dpo needs DPO pairs: export with "
                                "`evo export RUN --format dpo`")
        return [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]}
                for r in rows]
    if rows and "completions" not in rows[0]:
        raise TrainingError("rl.method=grpo needs GRPO groups: export with "
                            "`evo export RUN --format grpo`")
    return [{"prompt": r["prompt"], "known": known_table(r["completions"]),
             "parent_code": r["parent_code"], "edit_kind": r["edit_kind"]} for r in rows]


def check_training_inputs(rows: list[dict[str, Any]], method: str, rl: RLConfig,
                          model_path: str) -> Path:
    """Refuse too few examples or a folder that is no model before anything heavy loads
    (torch, transformers: seconds) and before an adapter folder is made; return the
    model folder."""
    if len(rows) < rl.min_examples:
        raise TrainingError(f"{len(rows)} {method} examples, fewer than rl.min_examples="
                            f"{rl.min_examples}; search longer or lower rl.min_examples")
    return check_model_folder(model_path)


def build_trainer(rows: list[dict[str, Any]], method: str, rl: RLConfig, model_path: str,
                  work_dir: Path) -> Any:
    """A ready DPOTrainer or GRPOTrainer with a fresh LoRA adapter on the base model."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

    folder = check_training_inputs(rows, method, rl, model_path)
    set_seed(rl.seed)
    cuda = torch.cuda.is_available()
    bf16 = cuda and torch.cuda.is_bf16_supported()
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(
            folder, dtype=torch.bfloat16 if bf16 else torch.float32)
    except Exception as exc:  # transformers raises many kinds for a broken folder
        first = first_line(exc, 200)
        raise TrainingError(f"rl.model_path={str(folder)!r}: transformers cannot load it "
                            f"({type(exc).__name__}: {first}); give a complete Hugging "
                            "Face model folder (config.json, tokenizer files, weights)"
                            ) from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    lora = LoraConfig(r=rl.lora_r, lora_alpha=rl.lora_alpha, lora_dropout=rl.lora_dropout,
                      target_modules=list(rl.lora_targets), task_type="CAUSAL_LM")
    dataset = Dataset.from_list(training_rows(rows, method))
    common: dict[str, Any] = dict(
        output_dir=str(work_dir), max_steps=rl.steps, learning_rate=rl.lr,
        logging_steps=1, save_strategy="no", report_to=[], seed=rl.seed, bf16=bf16,
        use_cpu=not cuda, disable_tqdm=True)
    if method == "dpo":
        from trl import DPOConfig, DPOTrainer

        args = DPOConfig(**common, per_device_train_batch_size=rl.batch_size,
                         beta=rl.dpo_beta, max_length=rl.max_length)
        return DPOTrainer(model=model, args=args, train_dataset=dataset,
                          processing_class=tokenizer, peft_config=lora)
    from trl import GRPOConfig, GRPOTrainer

    generations = rl.grpo_num_generations
    batch = -(-rl.batch_size // generations) * generations  # a multiple of the group size
    args = GRPOConfig(**common, per_device_train_batch_size=batch,
                      num_generations=generations,
                      max_completion_length=rl.grpo_max_completion_tokens)
    return GRPOTrainer(model=model, reward_funcs=[archive_reward(rl.rewards)], args=args,
                       train_dataset=dataset, processing_class=tokenizer, peft_config=lora)


def train_adapter(rows: list[dict[str, Any]], method: str, rl: RLConfig, model_path: str,
                  out_dir: Path, source: TrainSource) -> dict[str, Any]:
    """Train, save the adapter and its metadata to ``out_dir``; return the metadata."""
    out_dir = Path(out_dir)
    started = time.perf_counter()
    # (it refuses too few examples or no model before the adapter folder is made)
    trainer = build_trainer(rows, method, rl, model_path, out_dir / "trainer")
    out_dir.mkdir(parents=True, exist_ok=True)
    result = trainer.train()
    trainer.model.save_pretrained(out_dir)
    trainer.processing_class.save_pretrained(out_dir)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    metadata = {
        "base_model": str(check_model_folder(model_path)), "method": method,
        "data": source.data, "examples": len(rows), "run": source.run,
        "evaluations": source.evaluations, "steps": int(trainer.state.global_step),
        "seconds": round(time.perf_counter() - started, 3),
        "loss": float(result.training_loss), "losses": losses,
        "lora": {"r": rl.lora_r, "alpha": rl.lora_alpha, "dropout": rl.lora_dropout,
                 "targets": list(rl.lora_targets)},
        "lr": rl.lr, "batch_size": rl.batch_size, "seed": rl.seed,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **source.extra}
    (out_dir / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    return metadata
