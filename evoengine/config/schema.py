"""Structured config dataclasses: the schema Hydra validates every override against.

Each dataclass is the type of one config group (``conf/<group>/*.yaml`` fill it in).
Values are checked by each class's ``validate()`` (called for the whole tree by
:func:`evoengine.config.compose.validate_tree`) so that a bad value fails before any
work starts, with a message that names the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from evoengine.config.checks import require as _require
from evoengine.config.llm_schema import LLMConfig
from evoengine.config.rl_schema import RLConfig
from evoengine.config.scale_schema import ExecutorConfig, RayConfig

# The longest wall-clock limit a problem may set (a run of an evaluation or of its
# scoring); an infinite one overflowed the sandbox's integer limits.
MAX_TIMEOUT_S = 86_400.0
MAX_ISLANDS = 1000  # a million islands wrote a million seed copies before the first child
# The longest name= of a new run (its folder; 300 characters gave "File name too long").
# Checked by compose.load_run_config, not RunConfig.validate: `evo resume` keeps a run's
# name, which an older run, or one named after a long problem name, may have longer.
MAX_NAME_LENGTH = 100


@dataclass
class FeatureDimConfig:
    """One MAP-Elites axis: a feature name and the range split into ``bins`` cells."""

    name: str = MISSING
    min: float = 0.0
    max: float = 1.0
    bins: int = 10

    def validate(self) -> None:
        _require(self.bins >= 1, f"features.{self.name}.bins", "must be at least 1")
        _require(self.max > self.min, f"features.{self.name}.max", "must be greater than min")


@dataclass
class SplitConfig:
    """An instance set. ``spec`` is passed to the problem's ``load_instances``."""

    spec: dict[str, Any] = field(default_factory=dict)


@dataclass
class CascadeStageConfig:
    """One stage of an evaluation cascade: the first ``instances`` train instances
    (null: all of them); the candidate goes on to the next stage only if its score
    here is at least ``threshold``."""

    instances: int | None = None
    threshold: float = float("-inf")


@dataclass
class ProblemConfig:
    """A problem: ``problems/<name>/problem.yaml`` is an instance of this."""

    name: str = MISSING
    path: str | None = None  # the problem folder; filled in by the loader
    description: str = ""
    evolve_file: str = "initial.py"
    entry: str = MISSING  # the evolved function, e.g. "priority"
    harness: str = "harness.py"
    scorer: str = "score.py"
    splits: dict[str, SplitConfig] = field(default_factory=dict)  # train/validation/test
    timeout_s: float = 60.0
    cpu_s: int = 60
    memory_mb: int = 2048
    # score.py's score() on one evaluation's output, on the host: past this the run
    # stops with an error naming the scorer (a scorer that never returned hung the run)
    score_timeout_s: float = 300.0
    features: list[FeatureDimConfig] = field(default_factory=list)
    gp_vocabulary: list[list[str]] = field(default_factory=list)  # interchangeable calls
    preload: list[str] = field(default_factory=lambda: ["numpy"])
    # Where the candidate runs inside the sandbox. True: in a process of its own,
    # which the harness calls over a pipe (plain values and numeric numpy arrays
    # cross, never pickles), so the candidate cannot reach the harness, its
    # instances or its result: the score reflects what the evolved function does.
    # The harness sees a module of the candidate's callables; each call costs a
    # pipe round trip (about 20-30 us on a 2-core VM). False: the candidate is
    # imported into the harness's process, which is faster for harnesses that call
    # it very often, but then a candidate can replace the harness (patch
    # harness.run, read the instances, patch numpy) and return any output it likes;
    # only right for problems whose every feasible output is a legitimate solution
    # (circle packing: any valid packing counts), never for ones where the output
    # must come from the evolved function (online bin packing).
    candidate_process: bool = True
    # False when the score is computed inside the sandbox by the problem's own code
    # (OpenEvolve-format dirs): a candidate could forge it; runs say so.
    trusted_score: bool = True
    # A seed without EVOLVE-BLOCK markers is evolvable as a whole (OpenEvolve-format
    # dirs); False: such a seed is an error.
    evolve_whole_file: bool = False
    # Hidden-test problems (problems/agent): a second harness, run in a sandbox call of
    # its own on the candidate harness's raw output; score.py scores what it returns,
    # so the candidate's own output never decides its score. The problem's data/
    # folder is then hidden from every sandboxed run.
    grader: str | None = None
    # Staged evaluation on train (evoengine/evaluation/cascade.py); empty: one stage.
    cascade: list[CascadeStageConfig] = field(default_factory=list)
    requires_llm: bool = False  # the candidate calls a model: llm=gp cannot run it
    # The metered model proxy (evoengine/llm/sandbox_proxy.py): calls and tokens one
    # evaluation may use; 0 calls: no proxy. 0 tokens: no token cap.
    llm_calls_per_evaluation: int = 0
    llm_tokens_per_evaluation: int = 0
    improve_harness: str | None = None  # mutation.self_modify: runs the agent's improve()

    def validate(self) -> None:
        for key in ("timeout_s", "score_timeout_s"):
            _require(0 < getattr(self, key) <= MAX_TIMEOUT_S, f"problem.{key}",
                     f"must be positive and at most a day ({MAX_TIMEOUT_S:g} s)")
        for i, stage in enumerate(self.cascade):
            _require(stage.instances is None or stage.instances >= 1,
                     f"problem.cascade.{i}.instances", "must be at least 1 (or null: all)")
        _require(self.llm_calls_per_evaluation >= 0, "problem.llm_calls_per_evaluation",
                 "must be >= 0")
        _require(self.llm_tokens_per_evaluation >= 0, "problem.llm_tokens_per_evaluation",
                 "must be >= 0")
        _require(self.cpu_s > 0, "problem.cpu_s", "must be positive")
        _require(self.memory_mb >= 64, "problem.memory_mb", "must be at least 64")
        _require("train" in self.splits, "problem.splits.train",
                 "every problem needs a train split")


@dataclass
class SandboxConfig:
    """Where candidate code runs. ``auto``: Docker when a daemon answers and the
    image exists (``evo sandbox build``), else ``process``."""

    backend: str = "auto"  # auto | process | docker
    pool_size: int = 2  # resident runners (or containers) per instance set
    max_processes: int = 32
    max_file_mb: int = 16
    max_output_mb: int = 8
    image: str = "evoengine-sandbox:latest"  # docker: the image `evo sandbox build` makes
    cpus: float = 1.0  # docker: CPUs per container
    tmpfs_mb: int = 256  # size of the tmpfs that holds the work dirs (both backends)

    def validate(self) -> None:
        _require(self.backend in ("auto", "process", "docker"), "sandbox.backend",
                 f"unknown backend {self.backend!r}; choose auto, process or docker")
        _require(self.pool_size >= 1, "sandbox.pool_size", "must be at least 1")
        _require(self.max_processes >= 1, "sandbox.max_processes", "must be at least 1")
        _require(self.max_file_mb >= 1, "sandbox.max_file_mb", "must be at least 1")
        _require(self.max_output_mb >= 1, "sandbox.max_output_mb", "must be at least 1")
        _require(bool(self.image and self.image.strip()), "sandbox.image",
                 "must name a Docker image, e.g. evoengine-sandbox:latest")
        _require(0 < self.cpus <= 1024, "sandbox.cpus", "must be a positive number of CPUs")
        _require(self.tmpfs_mb >= 16, "sandbox.tmpfs_mb", "must be at least 16")


@dataclass
class DBConfig:
    """The archive database. ``url`` null: SQLite at ``runs/<name>/archive.db``."""

    backend: str = "sqlite"  # set by the db= group: sqlite | postgres (needs url)
    url: str | None = None
    echo: bool = False

    def validate(self) -> None:
        _require(self.backend in ("sqlite", "postgres"), "db.backend", "choose db=sqlite "
                 "or db=postgres")
        _require(self.backend != "postgres" or bool(self.url), "db.url", "db=postgres needs "
                 "the server: db.url=postgresql+psycopg://USER@HOST:5432/DBNAME")


SELECTION_STRATEGIES = ("power_law", "score_novelty", "uniform", "tournament")


@dataclass
class SearchConfig:
    """Budgets, concurrency, islands, the MAP-Elites grid and parent selection."""

    max_evaluations: int = 1000
    max_wall_seconds: float = 0.0  # 0: no limit
    max_cost: float = 0.0  # in dollars; 0: no limit
    llm_concurrency: int = 2
    eval_concurrency: int = 2
    max_idle_steps: int = 1000  # stop after this many steps in a row with nothing evaluated
    # Steps written in step order and each asked against a fixed earlier archive, so
    # that a run at any concurrency is reproducible and replays exactly (loop.py)
    deterministic: bool = False
    num_islands: int = 4
    migration_interval: int = 100  # evaluations between migrations
    migration_count: int = 2  # elites each island sends to the next (ring)
    selection: str = "power_law"
    power_law_alpha: float = 1.0  # P(rank r) ~ r^-alpha
    tournament_size: int = 3
    num_top_inspirations: int = 1  # from the island's best programs
    num_cell_inspirations: int = 1  # elites of other cells of the island
    top_k: int = 10  # the island's best programs kept for inspirations
    code_length: FeatureDimConfig = field(
        default_factory=lambda: FeatureDimConfig(name="code_length", min=0, max=2000, bins=8))
    features: list[FeatureDimConfig] = field(default_factory=list)  # empty: problem's
    # At the end of `evo run`: score this many best programs (by train score) on the
    # validation split, which the search never sees, and show the gap (0: none).
    validate_top: int = 3

    def validate(self) -> None:
        _require(self.max_evaluations >= 1, "search.max_evaluations", "must be at least 1")
        _require(self.validate_top >= 0, "search.validate_top", "must be >= 0")
        _require(self.max_wall_seconds >= 0, "search.max_wall_seconds", "must be >= 0")
        _require(self.max_cost >= 0, "search.max_cost", "must be >= 0")
        _require(self.llm_concurrency >= 1, "search.llm_concurrency", "must be at least 1")
        _require(self.eval_concurrency >= 1, "search.eval_concurrency", "must be at least 1")
        _require(self.max_idle_steps >= 1, "search.max_idle_steps", "must be at least 1")
        _require(1 <= self.num_islands <= MAX_ISLANDS, "search.num_islands",
                 f"must be from 1 to {MAX_ISLANDS} (each island starts with a stored copy of "
                 "the seed)")
        _require(self.migration_interval >= 1, "search.migration_interval", "must be >= 1")
        _require(self.migration_count >= 0, "search.migration_count", "must be >= 0")
        _require(self.selection in SELECTION_STRATEGIES, "search.selection",
                 f"unknown strategy {self.selection!r}; choose one of "
                 + ", ".join(SELECTION_STRATEGIES))
        _require(self.power_law_alpha >= 0, "search.power_law_alpha", "must be >= 0")
        _require(self.tournament_size >= 1, "search.tournament_size", "must be at least 1")
        _require(self.num_top_inspirations >= 0, "search.num_top_inspirations", "must be >= 0")
        _require(self.num_cell_inspirations >= 0, "search.num_cell_inspirations", "must be >= 0")
        _require(self.top_k >= 1, "search.top_k", "must be at least 1")


NOVELTY_BACKENDS = ("auto", "embedding", "text")


@dataclass
class MutationConfig:
    """Filters applied to a child before it is evaluated."""

    novelty: bool = False  # reject a child nearly identical to a program of its island
    novelty_threshold: float = 0.95  # similarity (0..1) at or above which it is rejected
    # text (default: character 3-gram similarity, no dependencies) | embedding (MiniLM,
    # the `novelty` extra; it rates small code edits > 0.97, so use a threshold ~0.99)
    # | auto (embedding when installed, else text)
    novelty_backend: str = "text"
    novelty_window: int = 200  # compare with at most this many recent programs per island
    # Darwin Goedel Machine style: each child is the parent agent's own improve() run in
    # the sandbox (problem.improve_harness; evoengine/mutation/self_modify.py).
    self_modify: bool = False

    def validate(self) -> None:
        _require(0 < self.novelty_threshold <= 1, "mutation.novelty_threshold",
                 "must be within (0, 1]")
        _require(self.novelty_backend in NOVELTY_BACKENDS, "mutation.novelty_backend",
                 f"unknown backend {self.novelty_backend!r}; choose auto, embedding or text")
        _require(self.novelty_window >= 1, "mutation.novelty_window", "must be at least 1")


@dataclass
class RunConfig:
    """The whole configuration of ``evo run``."""

    problem: ProblemConfig = MISSING
    llm: LLMConfig = field(default_factory=LLMConfig)
    mutation: MutationConfig = field(default_factory=MutationConfig)
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    db: DBConfig = field(default_factory=DBConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    seed: int = 0
    name: str | None = None  # default: <problem>-<date>-<time>
    runs_dir: str = "runs"
    ui: str = "auto"  # auto (live dashboard on a terminal) | rich | plain | none

    def validate(self) -> None:
        _require(0 <= self.seed < 2**63, "seed", "must be a whole number from 0 to 2**63-1 "
                 "(the archive stores it as a 64-bit integer)")
        _require(self.ui in ("auto", "rich", "plain", "none"), "ui",
                 f"unknown ui {self.ui!r}; choose auto, rich, plain or none")
        _require(self.name is None or ("/" not in self.name and self.name not in ("", ".", "..")),
                 "name", "must be a plain folder name")  # its length: MAX_NAME_LENGTH
        _require(bool(self.runs_dir.strip()), "runs_dir", "is empty; give the folder that "
                 "holds the runs, e.g. runs_dir=runs (runs_dir=. for this one)")
        _require(not self.rl.enabled or (self.llm.provider == "vllm" and not self.llm.replay),
                 "rl.enabled", "fine-tunes an in-process model: use llm=vllm (no llm.replay)")
        # The model proxy is a socket on this machine, and its token changes with every
        # evaluation: Ray nodes can reach neither.
        _require(self.executor.kind == "local" or self.problem.llm_calls_per_evaluation <= 0,
                 "executor.kind", f"problem {self.problem.name!r} serves a model to its "
                 "candidates through this machine's proxy: use executor=local")
