"""RL in the loop: every ``rl.every`` evaluations, train on the archive so far and sample
with the new adapter from then on, with no restart of the vLLM engine.

Training runs as a separate process (``evo train <run> --out <run>/adapters/rl-<k>``,
its output in ``rl-<k>.log`` beside it), not a thread: it has its own interpreter and
CUDA context, so the controller's event loop never waits on the GIL, a crash or an
out-of-memory in training cannot take the run down (the run keeps the adapter it had
and logs why), and the training's GPU memory is freed when it exits. It reads the run's
database while the run goes on (SQLite WAL, or PostgreSQL).

While it trains, the search goes on sampling with the previous adapter (or the base
model) by default; ``rl.pause=true`` holds new proposals until the adapter is in (steps
already proposing finish), which makes the switch point exact. When the process
succeeds the adapter is handed to the running engine by name
(:meth:`~evoengine.llm.vllm_client.VLLMClient.add_adapter`, a ``LoRARequest(name, id,
path)`` on the next batch) and made the one new requests use. Each child is labelled
with the adapter its request was queued with, which the store writes to
``mutation_calls.adapter``. A training still running when the run ends is stopped.
On ``evo resume`` the newest adapter of ``<run>/adapters`` is handed over again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import sys
from pathlib import Path
from typing import Any

from evoengine.errors import UserError
from evoengine.llm.vllm_client import VLLMClient, reset_served_adapter, served_adapter
from evoengine.mutation.types import Child, Mutator, ParentView
from evoengine.paths import ARCHIVE_FILE
from evoengine.rl.training import METADATA_FILE

log = logging.getLogger(__name__)
ADAPTER_PREFIX = "rl-"


class RLSetupError(UserError):
    """RL in the loop cannot start with this run's model."""


def find_vllm_client(mutator: Any) -> VLLMClient:
    """The in-process vLLM client behind the mutator (unwrapping the call recorder)."""
    for member in getattr(getattr(mutator, "ensemble", None), "members", []):
        client = member.client
        while not isinstance(client, VLLMClient) and hasattr(client, "inner"):
            client = client.inner
        if isinstance(client, VLLMClient):
            return client
    raise RLSetupError("rl.enabled needs an in-process model to hand adapters to: "
                       "use llm=vllm llm.model=<local model folder>")


class RLSchedule:
    """Decides when to train, runs the training, and hands the adapter over."""

    def __init__(self, rl: Any, run_source: str, adapters_dir: Path, client: VLLMClient,
                 evaluations: int, run_name: str | None = None) -> None:
        self.rl = rl
        self.run_source = run_source
        self.adapters_dir = adapters_dir
        self.client = client
        self.run_name = run_name
        self._since = evaluations  # the evaluation count the next interval starts from
        self._task: asyncio.Task[None] | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._open = asyncio.Event()
        self._open.set()
        self.installed: list[str] = []
        self.failures: list[str] = []
        self._count = self._existing_count()
        client.prepare_lora(rl.lora_r)

    # -- what the controller calls ------------------------------------------------------
    async def ready(self) -> None:
        """Returns at once, or (``rl.pause``) when the training in flight is over."""
        await self._open.wait()

    def after_tell(self, evaluations: int) -> None:
        """Start a training when ``rl.every`` evaluations have passed since the last."""
        if self._task is not None or evaluations - self._since < self.rl.every:
            return
        self._since = evaluations
        self._count += 1
        name = f"{ADAPTER_PREFIX}{self._count}"
        if self.rl.pause:
            self._open.clear()
        self._task = asyncio.ensure_future(self._train_and_install(name, evaluations))

    async def close(self) -> None:
        """Stop a training still running (the run is over)."""
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._open.set()

    @property
    def training(self) -> bool:
        return self._task is not None

    # -- training -----------------------------------------------------------------------
    async def _train_and_install(self, name: str, evaluations: int) -> None:
        folder = self.adapters_dir / name
        try:
            returncode = await self._run_training(name, folder)
            if returncode != 0 or not (folder / "adapter_config.json").is_file():
                tail = self._log_tail(folder)
                raise RuntimeError(f"evo train exited with {returncode}: {tail}")
            self.install(name, folder)
            log.info("adapter %s trained at %d evaluations and in use", name, evaluations)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # training failed: keep sampling with what we had
            message = f"training {name} failed (the run goes on): {exc}"
            self.failures.append(message)
            log.warning("%s", message)
        finally:
            self._task = None
            self._open.set()

    async def _run_training(self, name: str, folder: Path) -> int:
        self.adapters_dir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "evoengine.cli", "train", self.run_source,
                   "--out", str(folder), "--name", name]
        if self.run_name:
            command += ["--run", self.run_name]
        with open(self.adapters_dir / f"{name}.log", "wb") as output:
            self._process = await asyncio.create_subprocess_exec(
                *command, stdin=asyncio.subprocess.DEVNULL, stdout=output,
                stderr=asyncio.subprocess.STDOUT)
            try:
                return await self._process.wait()
            except asyncio.CancelledError:
                if self._process.returncode is None:
                    self._process.kill()
                    await self._process.wait()
                raise

    def install(self, name: str, folder: Path) -> None:
        """Hand adapter ``folder`` to the running engine as ``name`` and sample with it."""
        self.client.add_adapter(name, str(folder))
        self.client.use_adapter(name)
        self.installed.append(name)

    def _log_tail(self, folder: Path) -> str:
        try:
            lines = (self.adapters_dir / f"{folder.name}.log").read_text().splitlines()
        except OSError:
            return "no log"
        return (lines or ["no output"])[-1][:300]

    # -- resume -------------------------------------------------------------------------
    def _adapters_on_disk(self) -> list[tuple[int, Path]]:
        found = []
        for folder in self.adapters_dir.glob(f"{ADAPTER_PREFIX}*"):
            match = re.fullmatch(rf"{ADAPTER_PREFIX}(\d+)", folder.name)
            if match and (folder / METADATA_FILE).is_file():
                found.append((int(match.group(1)), folder))
        return sorted(found)

    def _existing_count(self) -> int:
        found = self._adapters_on_disk()
        return found[-1][0] if found else 0

    def resume_latest(self) -> str | None:
        """Hand over the newest adapter a previous session trained; its name or None."""
        found = self._adapters_on_disk()
        if not found:
            return None
        folder = found[-1][1]
        metadata = json.loads((folder / METADATA_FILE).read_text())
        self._since = max(self._since, int(metadata.get("evaluations") or 0))
        self.install(folder.name, folder)
        return folder.name


class AdapterLabellingMutator:
    """The run's mutator with two additions: proposals wait while a paused training
    runs, and each child carries the LoRA adapter that sampled it."""

    def __init__(self, inner: Mutator, schedule: RLSchedule) -> None:
        self._inner = inner
        self.schedule = schedule

    def __getattr__(self, name: str) -> Any:  # name, observe, ensemble, close, ...
        return getattr(self._inner, name)

    async def propose(self, parent: ParentView, inspirations: list[ParentView],
                      feedback: str, rng: random.Random) -> Child | None:
        await self.schedule.ready()
        reset_served_adapter()
        child = await self._inner.propose(parent, inspirations, feedback, rng)
        if child is not None and child.adapter is None:
            child.adapter = served_adapter()
        return child


def attach_rl(context: Any) -> RLSchedule | None:
    """With ``rl.enabled``: an RLSchedule for the run, its mutator wrapped to label
    children; else None. ``context`` is the controller's RunContext."""
    config = context.config
    if not config.rl.enabled:
        return None
    client = find_vllm_client(context.mutator)
    run_dir = Path(context.run_dir)
    local = (run_dir / ARCHIVE_FILE).is_file()
    source = str(run_dir.resolve()) if local else context.db_url
    adapters = Path(config.rl.output_dir) if config.rl.output_dir else run_dir / "adapters"
    schedule = RLSchedule(config.rl, source, adapters.resolve(), client,
                          context.archive.evaluations,
                          run_name=None if local else config.name)
    resumed = schedule.resume_latest()
    note = (f"rl: training a LoRA adapter ({config.rl.method}) every {config.rl.every} "
            f"evaluations into {adapters}, handed to vLLM by name")
    context.notes.append(note + (f"; resumed with adapter {resumed}" if resumed else ""))
    context.mutator = AdapterLabellingMutator(context.mutator, schedule)
    return schedule
