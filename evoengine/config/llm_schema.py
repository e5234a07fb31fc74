"""Config of the mutators: ``llm.*`` (models, ensembles, edits, replay, vLLM) and the
offline GP mutator's ``llm.gp.*``."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from evoengine.config.checks import require as _require
from evoengine.config.checks import require_http_url


@dataclass
class GPOperatorWeights:
    """Relative probabilities of the offline GP operators."""

    perturb_constant: float = 2.0
    swap_operator: float = 1.0
    swap_call: float = 1.0
    delete_statement: float = 0.5
    duplicate_statement: float = 0.5
    swap_statements: float = 0.5
    crossover: float = 1.0
    grow: float = 1.5  # subtree insertion: wrap an expression in a new operator node
    hoist: float = 0.5  # shrinking: replace an expression by one of its sub-expressions

    def validate(self) -> None:
        for name, value in sorted(vars(self).items()):
            _require(value >= 0, f"llm.gp.operators.{name}", "must be non-negative")
        _require(sum(vars(self).values()) > 0, "llm.gp.operators", "at least one weight > 0")


@dataclass
class GPConfig:
    """The offline genetic-programming mutator (``llm=gp``)."""

    operators: GPOperatorWeights = field(default_factory=GPOperatorWeights)
    max_attempts: int = 20  # tries to make a child that differs from its parent
    constant_sigma: float = 0.25  # relative std-dev of a numeric perturbation

    def validate(self) -> None:
        _require(self.max_attempts >= 1, "llm.gp.max_attempts", "must be at least 1")
        _require(self.constant_sigma > 0, "llm.gp.constant_sigma", "must be positive")


@dataclass
class EditProbabilities:
    """How often an LLM proposal asks for each edit format (normalised at use)."""

    diff: float = 0.6  # SEARCH/REPLACE blocks
    full: float = 0.3  # full rewrite of the EVOLVE-BLOCK
    crossover: float = 0.1  # combine two parents from different cells

    def validate(self) -> None:
        for name, value in sorted(vars(self).items()):
            _require(value >= 0, f"llm.edit_probabilities.{name}", "must be non-negative")
        _require(sum(vars(self).values()) > 0, "llm.edit_probabilities", "one must be > 0")


LLM_PROVIDERS = ("auto", "gp", "openai", "litellm", "vllm")
ENSEMBLE_STRATEGIES = ("fixed", "ucb")
HTTP_CLIENTS = ("auto", "aiohttp", "httpx")


@dataclass
class ModelConfig:
    """One member of a model ensemble; unset fields fall back to the ``llm.*`` ones."""

    model: str = MISSING
    weight: float = 1.0  # fixed: the draw probability (normalised); 0: never chosen
    base_url: str | None = None
    api_key_env: str | None = None
    price_input_per_mtok: float | None = None
    price_output_per_mtok: float | None = None

    def validate(self) -> None:
        _require(self.weight >= 0, f"llm.models.{self.model}.weight", "must be >= 0")
        require_http_url(self.base_url, f"llm.models.{self.model}.base_url")


@dataclass
class LLMConfig:
    """Which mutator proposes children. ``auto``: a configured model, else ``gp``.

    ``auto`` uses ``openai`` when ``base_url`` is set or the environment variable named
    by ``api_key_env`` holds a key, and the offline GP mutator otherwise.
    """

    provider: str = "auto"  # auto | gp | openai | litellm | vllm
    model: str = "gpt-4o-mini"
    base_url: str | None = None  # any OpenAI-compatible server: vLLM, Ollama, LM Studio
    api_key_env: str = "OPENAI_API_KEY"  # the variable that holds the key (never the key)
    timeout_s: float = 120.0
    # llm=openai's transport under the SDK: aiohttp (the SDK's `aiohttp` extra, less CPU
    # per request), httpx (the SDK's default); auto: aiohttp when installed
    http_client: str = "auto"
    max_retries: int = 4  # on 429, 5xx and connection errors, with exponential backoff
    backoff_s: float = 1.0  # first retry delay; doubles each time
    temperature: float = 0.8
    max_tokens: int = 4096
    # a longer reply fails as malformed (its start, tokens and cost are kept); None: no cap
    max_reply_chars: int | None = 200_000
    price_input_per_mtok: float | None = None  # dollars per million prompt tokens
    price_output_per_mtok: float | None = None
    edit_probabilities: EditProbabilities = field(default_factory=EditProbabilities)
    templates_dir: str | None = None  # a folder of Jinja2 templates overriding the built-in
    # Ensembles: several models; empty means the single model above.
    models: list[ModelConfig] = field(default_factory=list)
    ensemble: str = "fixed"  # fixed (by weight) | ucb (a bandit rewarded by improvement)
    ucb_exploration: float = 1.0  # the UCB exploration constant
    cost_penalty: float = 0.0  # reward = improvement - cost_penalty * dollars spent
    # Exact replay: a recorded run's folder (or database URL); no model is called.
    replay: str | None = None
    # llm=vllm: an in-process vllm.LLM on the local model path in llm.model.
    vllm_batch_size: int = 8  # proposals sampled together in one generate() call
    vllm_gpu_memory_utilization: float = 0.85
    lora_adapters: dict[str, str] = field(default_factory=dict)  # name -> adapter folder
    lora_adapter: str | None = None  # the adapter (by name) to sample with; None: base
    gp: GPConfig = field(default_factory=GPConfig)

    def validate(self) -> None:
        _require(self.provider in LLM_PROVIDERS, "llm.provider",
                 f"unknown provider {self.provider!r}; choose one of "
                 + ", ".join(LLM_PROVIDERS))
        _require(bool(self.model), "llm.model", "must name a model")
        require_http_url(self.base_url, "llm.base_url")
        _require(self.timeout_s > 0, "llm.timeout_s", "must be positive")
        _require(self.http_client in HTTP_CLIENTS, "llm.http_client",
                 f"unknown HTTP client {self.http_client!r}; choose auto, aiohttp or httpx")
        _require(self.max_retries >= 0, "llm.max_retries", "must be >= 0")
        _require(self.backoff_s >= 0, "llm.backoff_s", "must be >= 0")
        _require(0 <= self.temperature <= 2, "llm.temperature", "must be within [0, 2]")
        _require(self.max_tokens >= 1, "llm.max_tokens", "must be at least 1")
        _require(self.max_reply_chars is None or self.max_reply_chars >= 1000,
                 "llm.max_reply_chars", "must be at least 1000 characters, or null for no cap")
        for key in ("price_input_per_mtok", "price_output_per_mtok"):
            value = getattr(self, key)
            _require(value is None or value >= 0, f"llm.{key}", "must be >= 0")
        _require(self.vllm_batch_size >= 1, "llm.vllm_batch_size", "must be at least 1")
        _require(0 < self.vllm_gpu_memory_utilization <= 1,
                 "llm.vllm_gpu_memory_utilization", "must be within (0, 1]")
        _require(self.lora_adapter is None or self.lora_adapter in self.lora_adapters,
                 "llm.lora_adapter", "must name an entry of llm.lora_adapters")
        _require(self.ensemble in ENSEMBLE_STRATEGIES, "llm.ensemble",
                 f"unknown strategy {self.ensemble!r}; choose fixed or ucb")
        _require(self.ucb_exploration >= 0, "llm.ucb_exploration", "must be >= 0")
        _require(self.cost_penalty >= 0, "llm.cost_penalty", "must be >= 0")
        if self.models:
            _require(sum(m.weight for m in self.models) > 0, "llm.models",
                     "at least one weight must be > 0")
            names = [m.model for m in self.models]
            twice = sorted({name for name in names if names.count(name) > 1})
            _require(not twice, "llm.models", f"{', '.join(twice)} listed twice; each model "
                     "may appear once (the archive tells the models apart by name)")
