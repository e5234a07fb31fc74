"""``executor=ray``: a SandboxBackend whose ``run`` sends the candidate to a Ray
cluster (DESIGN.md, "Sandbox backend").

Each alive node with CPUs gets one actor (``ray_worker.NodeSandbox``), pinned to it,
holding that node's own process or docker sandbox with ``ray.slots_per_node`` slots.
``run`` hands each evaluation to the least busy actor and awaits its ``RawOutput``;
the controller scores it as for a local sandbox, so results still flow through the
single controller that owns the archive.

A node (or its actor's worker process) that dies mid-evaluation raises one of Ray's
"lost" errors here; the evaluation is re-sent to another node, at most
``ray.max_retries`` times, then reported as a ``sandbox`` error. The node is left
alone for ``ray.dead_node_cooldown_s`` (Ray may still list a dead node as alive for a
while), and nodes that join are picked up every ``ray.node_refresh_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evoengine.config.compose import ConfigError
from evoengine.config.scale_schema import RayConfig
from evoengine.config.schema import SandboxConfig
from evoengine.errors import first_line
from evoengine.evaluation.result import ErrorKind
from evoengine.evaluation.sandbox.base import HarnessJob, Limits, RawOutput
from evoengine.evaluation.sandbox.ray_worker import NodeSandbox, ShippedJob

log = logging.getLogger(__name__)
CONNECT_CHECK_S = 120.0  # actors must answer within this at start (imports, runners)


@dataclass
class _NodeActor:
    node_id: str
    handle: Any  # ray.actor.ActorHandle
    slots: int
    in_flight: int = 0


def _lost_errors() -> tuple[type[BaseException], ...]:
    """Ray's errors meaning "the node or worker went away", not "the call failed"."""
    import ray.exceptions as rex

    names = ("ActorDiedError", "ActorUnavailableError", "WorkerCrashedError",
             "NodeDiedError", "ObjectLostError", "OwnerDiedError", "LocalRayletDiedError")
    return tuple(getattr(rex, name) for name in names if hasattr(rex, name))


class RaySandbox:
    """SandboxBackend ``ray``; call ``connect()`` once (sync) before ``run``."""

    name = "ray"

    def __init__(self, config: RayConfig, sandbox: SandboxConfig) -> None:
        self.config = config
        self.sandbox = sandbox
        self.requeued = 0  # evaluations re-sent after their node was lost
        self.lost_nodes: set[str] = set()
        self._actors: dict[str, _NodeActor] = {}
        self._cooldown: dict[str, float] = {}  # node id -> monotonic time it may return
        self._shipped: dict[str, Any] = {}  # job key -> ObjectRef of ShippedJob
        self._last_refresh = 0.0
        self._lost: tuple[type[BaseException], ...] = ()

    # --- set-up -------------------------------------------------------------------------
    def connect(self) -> str:
        """Join the cluster, start an actor per node and wait until they answer;
        return the one line the run prints. ConfigError when no cluster answers."""
        import ray

        self._lost = _lost_errors()
        address = self.config.address
        if not ray.is_initialized():
            self._check_reachable(address)
            try:
                ray.init(address=address, namespace=self.config.namespace,
                         log_to_driver=False, logging_level=logging.WARNING)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                first = first_line(exc)
                raise ConfigError(f"ray.address={address}: no Ray cluster answers ({first}); "
                                  "start one with `ray start --head` or give the head's "
                                  "host:port") from exc
        self._refresh(force=True)
        if not self._actors:
            raise ConfigError(f"ray.address={address}: the cluster has no node with CPUs "
                              "to run evaluations; add one with `ray start --address ...`")
        described = self._check_actors()
        slots = sum(a.slots for a in self._actors.values())
        return (f"executor: ray at {address}: {len(self._actors)} node(s), {slots} slots; "
                f"on the nodes, {described[0]['sandbox']}")

    @staticmethod
    def _check_reachable(address: str) -> None:
        """Fail at once on a head that does not answer (``ray.init`` would retry for
        minutes)."""
        host, _, port = address.rpartition(":")
        if address == "auto" or "://" in address or not port.isdigit():
            return
        try:
            socket.create_connection((host or "127.0.0.1", int(port)), timeout=10).close()
        except OSError as exc:
            raise ConfigError(f"ray.address={address}: no Ray head answers there ({exc}); "
                              "start one with `ray start --head --port PORT` or fix the "
                              "address") from exc

    def _check_actors(self) -> list[dict[str, Any]]:
        """Wait for every new actor's ``describe``; drop those whose node turns out to
        be dead (Ray lists a lost node as alive for a while); fail on anything else."""
        import ray

        calls = {node_id: a.handle.describe.remote() for node_id, a in self._actors.items()}
        described = []
        for node_id, call in calls.items():
            try:
                described.append(ray.get(call, timeout=CONNECT_CHECK_S))
            except self._lost:
                self._forget(node_id, cooldown=True)
            except Exception as exc:
                first = first_line(exc)
                raise ConfigError(f"ray.address={self.config.address}: the sandbox on a node "
                                  f"did not start ({first}); evoengine must be installed on "
                                  "every node") from exc
        if not described:
            raise ConfigError(f"ray.address={self.config.address}: no node's sandbox "
                              "answered; check `ray status`")
        return described

    def _refresh(self, force: bool = False) -> None:
        """Start actors on alive nodes that have none; forget those of dead nodes."""
        now = time.monotonic()
        if not force and now - self._last_refresh < self.config.node_refresh_s:
            return
        self._last_refresh = now
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        alive = {n["NodeID"]: n for n in ray.nodes()
                 if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0}
        for node_id in [n for n in self._actors if n not in alive]:
            self._forget(node_id)
        remote_cls = ray.remote(NodeSandbox)
        sandbox = dataclasses.asdict(self.sandbox)
        for node_id, node in alive.items():
            if node_id in self._actors or self._cooldown.get(node_id, 0.0) > now:
                continue
            slots = self.config.slots_per_node or max(1, int(node["Resources"]["CPU"]))
            handle = remote_cls.options(
                num_cpus=0, max_concurrency=slots, max_restarts=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
            ).remote(sandbox, slots)
            self._actors[node_id] = _NodeActor(node_id, handle, slots)

    def _forget(self, node_id: str, cooldown: bool = False) -> None:
        actor = self._actors.pop(node_id, None)
        if cooldown:
            self._cooldown[node_id] = time.monotonic() + self.config.dead_node_cooldown_s
            self.lost_nodes.add(node_id)
        if actor is not None:
            import ray

            with contextlib.suppress(Exception):
                ray.kill(actor.handle, no_restart=True)

    # --- the contract -------------------------------------------------------------------
    async def run(self, code: str, job: HarnessJob, limits: Limits) -> RawOutput:
        shipped = self._ship(job)
        attempts = self.config.max_retries + 1
        last = "no Ray node with CPUs is alive"
        for attempt in range(1, attempts + 1):
            self._refresh()
            if not self._actors:
                self._refresh(force=True)
            if not self._actors:
                await asyncio.sleep(1.0)
                continue
            actor = min(self._actors.values(), key=lambda a: a.in_flight / a.slots)
            actor.in_flight += 1
            try:
                return await actor.handle.run.remote(code, job.key, [shipped], limits)
            except self._lost as exc:
                last = f"{type(exc).__name__} on node {actor.node_id[:12]}"
                self._forget(actor.node_id, cooldown=True)
                if attempt < attempts:
                    self.requeued += 1
                    log.warning("ray: lost a node mid-evaluation (%s); re-sending it "
                                "(attempt %d of %d)", last, attempt + 1, attempts)
            except Exception as exc:  # Ray could not deliver the call: the engine's fault
                return RawOutput(ok=False, error=ErrorKind.SANDBOX,
                                 message=f"ray: {type(exc).__name__}: {exc}"[:500])
            finally:
                actor.in_flight -= 1
        return RawOutput(ok=False, error=ErrorKind.SANDBOX,
                         message=f"ray: the evaluation was lost {attempts} times with its "
                                 f"node ({last}); raise ray.max_retries or check the cluster")

    def _ship(self, job: HarnessJob) -> Any:
        """The job's instances and harness in the object store, once per job key."""
        shipped = self._shipped.get(job.key)
        if shipped is None:
            import ray

            source = Path(job.harness_path).read_bytes()
            shipped = self._shipped[job.key] = ray.put(ShippedJob(job, source))
        return shipped

    async def close(self) -> None:
        """Stop every node's sandbox (its runners or containers), then the actors."""
        import ray

        if not ray.is_initialized():
            return
        actors = list(self._actors.values())
        if actors:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.gather(
                    *(a.handle.close.remote() for a in actors), return_exceptions=True), 30)
        for node_id in list(self._actors):
            self._forget(node_id)
        self._shipped.clear()
        ray.shutdown()
