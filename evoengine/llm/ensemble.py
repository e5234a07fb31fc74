"""Several models behind one mutator: fixed weights, or a UCB bandit rewarded by results.

``llm.models`` lists the members (an empty list is an ensemble of one: ``llm.model``).
Each member is a client built from a copy of ``llm`` in which the member's ``model``,
``base_url``, ``api_key_env`` and prices replace the ``llm.*`` ones (unset: inherited).
Before each proposal :meth:`ModelEnsemble.choose` picks the member that serves it:

``fixed``
    A draw by the normalised ``weight`` s, using only the step's ``rng`` (so a seed
    gives the same choices). A member of weight 0 is never drawn. One eligible member
    draws nothing, so a single model leaves the step's random stream untouched.
``ucb``
    UCB1: every member is tried once first (in config order), then the member with the
    highest ``mean reward + llm.ucb_exploration * sqrt(ln N / n_i)`` serves (``N``
    pulls in all, ``n_i`` this member's; ties go to the earlier member). ``weight`` 0
    leaves a member out; other weights do not matter. No randomness is used.

Reward of one proposal (:func:`call_reward`), computed once the step is written:

* the child was evaluated and is valid: its improvement over the parent *relative to
  the parent's magnitude*, ``(child - parent) / |parent|``, clipped to [-1, 1]. Scores
  have any scale (bin packing's are about -4; another problem's may be 1e6), and the
  relative form makes the default exploration constant 1 fit them all; the clip keeps
  one lucky jump (or one disastrous but valid child) from owning the mean;
* a duplicate of a known program: 0 (valid, but nothing gained);
* anything else -- a model error, a reply that could not be applied, an edit outside the
  EVOLVE-BLOCK, a child that crashed, timed out or produced invalid output: -1, the
  worst a valid child can score, since a proposal that cannot be used is worth nothing;
* minus ``llm.cost_penalty`` times the call's cost in dollars (not clipped): with
  ``cost_penalty=10`` a $0.01 call costs as much as a 10 % improvement brings.

Rewards are tracked in both strategies (the dashboard shows pulls and mean reward per
model); only ``ucb`` acts on them.

Resume: the bandit's state is not stored anywhere of its own. Every proposal's
``mutation_calls`` row holds the member's name (``model``) and cost, and the parent's
and child's scores are in ``programs``, so :meth:`ModelEnsemble.from_history` rebuilds
the state from the rows, in the order they were written (the order the live bandit was
told), and it cannot drift from the archive. Rows of models that are no longer members
are skipped; a newly added member starts untried.

Limitations: near a parent score of 0 the relative improvement saturates, so a change
counts by its sign only; with ``search.llm_concurrency > 1`` choices are made while
earlier proposals are still in flight (a pending pull counts towards ``n_i`` and ``N``
so that concurrent choices spread out, but its reward is not yet known); members are
told apart by model name, so one model may not be listed twice.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from evoengine.config.llm_schema import ENSEMBLE_STRATEGIES, LLMConfig
from evoengine.llm.types import LLMClient

FAILED_REWARD = -1.0  # a proposal that produced nothing usable
DUPLICATE_REWARD = 0.0  # a valid program the archive already holds
_MIN_SCALE = 1e-12  # below this parent magnitude, a change counts by its sign


class ModelCall(NamedTuple):
    """What the bandit learns from one stored proposal (one ``mutation_calls`` row)."""

    model: str
    parent_score: float | None
    child_score: float | None  # None unless the child was evaluated and is valid
    cost: float
    outcome: str  # applied | duplicate | rejected | malformed | llm_error:... | ...


def relative_improvement(parent_score: float | None, child_score: float) -> float:
    """``(child - parent) / |parent|`` clipped to [-1, 1] (0 without a parent score)."""
    if not math.isfinite(child_score):
        return FAILED_REWARD
    if parent_score is None or not math.isfinite(parent_score):
        return 0.0
    delta = (child_score - parent_score) / max(abs(parent_score), _MIN_SCALE)
    return max(-1.0, min(1.0, delta))


def call_reward(outcome: str, parent_score: float | None, child_score: float | None,
                cost: float, cost_penalty: float) -> float:
    """The reward of one proposal; see the module docstring."""
    if outcome == "applied" and child_score is not None:
        base = relative_improvement(parent_score, child_score)
    elif outcome == "duplicate":
        base = DUPLICATE_REWARD
    else:
        base = FAILED_REWARD
    return base - cost_penalty * cost


@dataclass(frozen=True)
class Member:
    """One model of the ensemble: ``name`` is what ``mutation_calls.model`` records."""

    name: str
    client: LLMClient
    weight: float = 1.0
    where: str = ""  # the server, for the start-up line


@dataclass(frozen=True)
class ArmState:
    """The bandit's knowledge of one member: completed pulls and their summed reward."""

    model: str
    pulls: int
    reward_sum: float

    @property
    def mean_reward(self) -> float:
        return self.reward_sum / self.pulls if self.pulls else 0.0


def describe_arms(arms: Sequence[tuple[str, int, float]]) -> str:
    """``a: 12 pulls, mean reward +0.0312; b: 3 pulls, mean reward -1.0000``."""
    return "; ".join(f"{model}: {pulls} pulls, mean reward {mean:+.4f}"
                     for model, pulls, mean in arms)


class ModelEnsemble:
    """Chooses the client that serves each proposal and learns from the results."""

    def __init__(self, members: Sequence[Member], strategy: str = "fixed",
                 exploration: float = 1.0, cost_penalty: float = 0.0) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one model")
        names = [m.name for m in members]
        if len(set(names)) != len(names):
            raise ValueError(f"ensemble models must have distinct names: {names}")
        if strategy not in ENSEMBLE_STRATEGIES:
            raise ValueError(f"unknown ensemble strategy {strategy!r}")
        self.members = list(members)
        self.strategy = strategy
        self.exploration = exploration
        self.cost_penalty = cost_penalty
        self._eligible = [i for i, m in enumerate(self.members) if m.weight > 0]
        if not self._eligible:
            raise ValueError("at least one ensemble weight must be > 0")
        self._weights = [self.members[i].weight for i in self._eligible]
        self._index = {m.name: i for i, m in enumerate(self.members)}
        self._pulls = [0] * len(self.members)
        self._sums = [0.0] * len(self.members)
        self._pending = [0] * len(self.members)  # chosen, reward not told yet

    @classmethod
    def of_one(cls, client: LLMClient) -> ModelEnsemble:
        """A single model as an ensemble (it is always chosen; no rng is drawn)."""
        return cls([Member(client.model, client)])

    def __len__(self) -> int:
        return len(self.members)

    @property
    def name(self) -> str:
        """The mutator's name: the model, or ``a+b (ucb)`` for an ensemble."""
        if len(self.members) == 1:
            return self.members[0].name
        return "+".join(m.name for m in self.members) + f" ({self.strategy})"

    def announcement(self) -> str:
        """What the run says at start about its models."""
        if len(self.members) == 1:
            member = self.members[0]
            return f"{member.name} at {member.where}" if member.where else member.name
        listed = ", ".join(f"{m.name} at {m.where} (weight {m.weight:g})" if m.where
                           else f"{m.name} (weight {m.weight:g})" for m in self.members)
        if self.strategy == "ucb":
            how = (f"ucb bandit, exploration {self.exploration:g}, "
                   f"cost penalty {self.cost_penalty:g}/$")
        else:
            how = "fixed weights"
        return f"ensemble of {len(self.members)} models by {how}: {listed}"

    # --- choosing -------------------------------------------------------------------
    def choose(self, rng: random.Random) -> int:
        """The index of the member that serves the next proposal."""
        if len(self._eligible) == 1:
            index = self._eligible[0]
        elif self.strategy == "fixed":
            index = rng.choices(self._eligible, weights=self._weights, k=1)[0]
        else:
            index = self._ucb_choice()
        self._pending[index] += 1
        return index

    def _ucb_choice(self) -> int:
        counts = {i: self._pulls[i] + self._pending[i] for i in self._eligible}
        for i in self._eligible:  # untried first, in config order
            if counts[i] == 0:
                return i
        log_total = math.log(sum(counts.values()))
        best, best_value = self._eligible[0], -math.inf
        for i in self._eligible:
            mean = self._sums[i] / self._pulls[i] if self._pulls[i] else 0.0
            value = mean + self.exploration * math.sqrt(log_total / counts[i])
            if value > best_value:  # strictly: ties stay with the earlier member
                best, best_value = i, value
        return best

    def retire(self, name: str) -> bool:
        """Leave member ``name`` out of the choices from now on (the server refused its
        key or does not know its model); False when it is the last one left, or not a
        member. Not stored: a resume tries it again."""
        index = self._index.get(name)
        if index is None:
            return False
        if index in self._eligible:
            if len(self._eligible) == 1:
                return False
            position = self._eligible.index(index)
            del self._eligible[position]
            del self._weights[position]
        return True

    # --- learning -------------------------------------------------------------------
    def update(self, index: int, reward: float) -> None:
        """Count one completed pull of member ``index`` with ``reward``."""
        self._pulls[index] += 1
        self._sums[index] += reward
        if self._pending[index] > 0:
            self._pending[index] -= 1

    def observe(self, call: ModelCall) -> float | None:
        """Reward the member that made ``call``; None if it is not a member."""
        index = self._index.get(call.model)
        if index is None:
            return None
        reward = call_reward(call.outcome, call.parent_score, call.child_score, call.cost,
                             self.cost_penalty)
        self.update(index, reward)
        return reward

    def reset(self) -> None:
        self._pulls = [0] * len(self.members)
        self._sums = [0.0] * len(self.members)
        self._pending = [0] * len(self.members)

    def from_history(self, history: Iterable[tuple[str, float | None, float | None, float,
                                                   str]]) -> int:
        """Replace the state by the one ``history`` gives (stored calls, in the order
        they were told); return how many calls were of members."""
        self.reset()
        counted = 0
        for row in history:
            if self.observe(ModelCall(*row)) is not None:
                counted += 1
        return counted

    def state(self) -> tuple[ArmState, ...]:
        """Completed pulls and summed rewards per member (pending choices excluded)."""
        return tuple(ArmState(m.name, self._pulls[i], self._sums[i])
                     for i, m in enumerate(self.members))

    def summary(self) -> list[tuple[str, int, float]]:
        """``(model, pulls, mean reward)`` per member, for the dashboard."""
        return [(arm.model, arm.pulls, arm.mean_reward) for arm in self.state()]

    def describe(self) -> str:
        return describe_arms(self.summary())

    async def close(self) -> None:
        for member in self.members:
            await member.client.close()


def member_configs(config: LLMConfig) -> list[tuple[LLMConfig, float]]:
    """Each member's full ``LLMConfig`` and weight (``llm.model`` alone when no list)."""
    if not config.models:
        return [(config, 1.0)]
    members = []
    for model in config.models:
        members.append((dataclasses.replace(
            config, model=model.model, models=[],
            base_url=model.base_url if model.base_url is not None else config.base_url,
            api_key_env=model.api_key_env or config.api_key_env,
            price_input_per_mtok=(model.price_input_per_mtok
                                  if model.price_input_per_mtok is not None
                                  else config.price_input_per_mtok),
            price_output_per_mtok=(model.price_output_per_mtok
                                   if model.price_output_per_mtok is not None
                                   else config.price_output_per_mtok)), model.weight))
    return members


def build_ensemble(config: LLMConfig,
                   make_client: Callable[[LLMConfig], LLMClient]) -> ModelEnsemble:
    """One client per member (``make_client`` builds it from the member's config)."""
    members = []
    for member_config, weight in member_configs(config):
        client = make_client(member_config)
        where = member_config.base_url or "api.openai.com"
        members.append(Member(member_config.model, client, weight, where))
    return ModelEnsemble(members, config.ensemble, config.ucb_exploration,
                         config.cost_penalty)
