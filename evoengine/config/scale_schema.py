"""Config of where evaluations run: ``executor.*`` and the Ray cluster's ``ray.*``."""

from __future__ import annotations

from dataclasses import dataclass

from evoengine.config.checks import require as _require

EXECUTORS = ("local", "ray")


@dataclass
class ExecutorConfig:
    """Where evaluations run: ``local`` (this machine's sandbox) or ``ray`` (a sandbox
    on every node of a Ray cluster, set up by ``ray.*``; scored here as always)."""

    kind: str = "local"

    def validate(self) -> None:
        _require(self.kind in EXECUTORS, "executor.kind",
                 f"unknown executor {self.kind!r}; choose local or ray")


@dataclass
class RayConfig:
    """``executor=ray``: the cluster, and how evaluations are spread over its nodes."""

    address: str = "auto"  # auto: $RAY_ADDRESS or the `ray start` cluster here; host:port
    namespace: str = "evoengine"
    slots_per_node: int = 0  # concurrent evaluations per node; 0: the node's CPU count
    max_retries: int = 3  # re-sends of an evaluation whose node or worker was lost
    dead_node_cooldown_s: float = 30.0  # no new work for a node whose worker just died
    node_refresh_s: float = 10.0  # how often to look for nodes that joined

    def validate(self) -> None:
        _require(bool(self.address.strip()), "ray.address",
                 "must be auto or the head's host:port (e.g. 10.0.0.5:6379)")
        _require(self.slots_per_node >= 0, "ray.slots_per_node", "must be >= 0")
        _require(self.max_retries >= 0, "ray.max_retries", "must be >= 0")
        _require(self.dead_node_cooldown_s >= 0, "ray.dead_node_cooldown_s", "must be >= 0")
        _require(self.node_refresh_s > 0, "ray.node_refresh_s", "must be positive")
