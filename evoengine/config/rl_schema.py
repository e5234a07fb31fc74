"""Config of RL fine-tuning of the mutation model (``rl.*``; ``conf/rl/``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from evoengine.config.checks import require as _require

RL_METHODS = ("dpo", "grpo")


@dataclass
class RewardWeights:
    """Reward shaping of GRPO groups (``docs/rl.md``): a valid child earns ``score`` x its
    score normalised over the run's valid programs (0 worst .. 1 best); a failed proposal
    loses the penalty of its kind."""

    score: float = 1.0
    noop: float = 0.5  # the edit changed nothing, or made a program already known
    failed_edit: float = 1.0  # unmatched, malformed, or touching code outside EVOLVE-BLOCK
    crash: float = 1.0  # crash, syntax, invalid_output, memory, sandbox
    timeout: float = 1.0

    def validate(self) -> None:
        for name, value in sorted(vars(self).items()):
            _require(value >= 0, f"rl.rewards.{name}", "must be >= 0")


@dataclass
class RLConfig:
    """Fine-tuning the local mutation model on the archive (``evo export``, ``evo train``,
    and with ``enabled`` every ``every`` evaluations of an ``llm=vllm`` run)."""

    enabled: bool = False
    every: int = 200  # evaluations between trainings in the loop
    pause: bool = False  # hold new proposals while a training runs (else sample on)
    method: str = "dpo"  # dpo | grpo
    model_path: str | None = None  # the local HF model to adapt; None: llm.model
    output_dir: str | None = None  # None: <run dir>/adapters
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    lr: float = 5e-5
    steps: int = 100
    batch_size: int = 4
    max_length: int = 4096  # tokens of prompt + completion kept per example
    min_examples: int = 4  # fewer pairs/groups than this: no training
    seed: int = 0
    dpo_beta: float = 0.1
    dpo_score_percentile: float = 50.0  # chosen children must score above this percentile
    max_pairs_per_prompt: int = 4
    grpo_num_generations: int = 4
    grpo_max_completion_tokens: int = 1024
    grpo_min_group_size: int = 2  # children of one prompt needed to form a group
    rewards: RewardWeights = field(default_factory=RewardWeights)

    def validate(self) -> None:
        _require(self.every >= 1, "rl.every", "must be at least 1")
        _require(self.method in RL_METHODS, "rl.method",
                 f"unknown method {self.method!r}; choose dpo or grpo")
        for key in ("lora_r", "lora_alpha", "steps", "batch_size", "max_length",
                    "min_examples", "max_pairs_per_prompt", "grpo_max_completion_tokens"):
            _require(getattr(self, key) >= 1, f"rl.{key}", "must be at least 1")
        _require(0 <= self.lora_dropout < 1, "rl.lora_dropout", "must be within [0, 1)")
        _require(bool(self.lora_targets), "rl.lora_targets", "name at least one module")
        _require(self.lr > 0, "rl.lr", "must be positive")
        _require(self.dpo_beta > 0, "rl.dpo_beta", "must be positive")
        _require(0 <= self.dpo_score_percentile <= 100, "rl.dpo_score_percentile",
                 "must be within [0, 100]")
        _require(self.grpo_num_generations >= 2, "rl.grpo_num_generations",
                 "must be at least 2 (GRPO compares completions of one prompt)")
        _require(self.grpo_min_group_size >= 2, "rl.grpo_min_group_size",
                 "must be at least 2")
