"""``executor=ray``: evaluations run on the nodes of a real Ray cluster (a head and a
worker node started with ``ray start`` on 127.0.0.1, each in a temp dir of its own),
and a run survives a worker node killed mid-run with every evaluation recorded."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from evoengine.archive.models import Evaluation, Program, Run
from evoengine.archive.store import make_engine
from evoengine.config.scale_schema import RayConfig
from evoengine.config.schema import SandboxConfig
from evoengine.evaluation.sandbox.base import HarnessJob, Limits
from tests.conftest import evo_command
from tests.ray_cluster import LocalRayCluster, kill_processes_of

pytestmark = pytest.mark.ray

@pytest.fixture(scope="module")
def ray_cluster():
    cluster = LocalRayCluster()
    try:
        cluster.start_head()
        yield cluster
    finally:
        cluster.stop()


SLOW_HARNESS = "def run(candidate, instances):\n    return [candidate.f(x) for x in instances]\n"
SLOW_CANDIDATE = "import time\ndef f(x):\n    time.sleep(1.0)\n    return 2 * x\n"


def test_an_evaluation_on_a_lost_node_is_sent_to_another(ray_cluster: LocalRayCluster,
                                                         tmp_path: Path) -> None:
    from evoengine.evaluation.sandbox.ray_backend import RaySandbox

    worker = ray_cluster.add_worker()
    copies_before = set(Path(tempfile.gettempdir()).glob("evo-ray-harness-*"))
    backend = RaySandbox(RayConfig(address=ray_cluster.address, slots_per_node=1),
                         SandboxConfig(backend="process"))
    note = backend.connect()
    assert "executor: ray" in note and "2 node(s)" in note
    harness = tmp_path / "harness.py"
    harness.write_text(SLOW_HARNESS)
    job = HarnessJob(key="slow", harness_path=harness, instances=[1, 2, 3])

    async def two_evaluations_and_a_node_loss():
        runs = [asyncio.ensure_future(backend.run(SLOW_CANDIDATE, job, Limits(timeout_s=30)))
                for _ in range(2)]  # one per node: each node has one slot
        await asyncio.sleep(1.5)
        assert kill_processes_of(worker) > 0
        try:
            return await asyncio.gather(*runs)
        finally:
            await backend.close()

    outputs = asyncio.run(two_evaluations_and_a_node_loss())
    assert [o.output for o in outputs] == [[2, 4, 6], [2, 4, 6]]
    assert backend.requeued >= 1 and len(backend.lost_nodes) == 1
    # the nodes share this machine's files: no harness copy is made, even on the lost node
    assert set(Path(tempfile.gettempdir()).glob("evo-ray-harness-*")) == copies_before


def test_an_unreachable_cluster_is_one_line_saying_what_to_do(run_evo) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = run_evo("run", "problem=bin_packing_quick", "llm=gp", "executor=ray",
                     f"ray.address=127.0.0.1:{port}", "search.max_evaluations=2", "ui=none")
    assert result.returncode == 2
    assert result.stderr.startswith("evo: error: ray.address=127.0.0.1:")
    assert len(result.stderr.strip().splitlines()) == 1


def _train_evaluations(engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count(Evaluation.id)).where(
            Evaluation.split == "train")).scalar() or 0)


@pytest.mark.slow
@pytest.mark.postgres
def test_a_run_on_postgresql_and_ray_survives_a_worker_killed_mid_run(
        ray_cluster: LocalRayCluster, postgres_url: str, tmp_path: Path) -> None:
    worker = ray_cluster.add_worker()
    budget = 40
    proc = subprocess.Popen(
        evo_command("run", "problem=bin_packing", "llm=gp", "db=postgres",
                    f"db.url={postgres_url}", "executor=ray",
                    f"ray.address={ray_cluster.address}", "ray.slots_per_node=1",
                    "sandbox=process", "search.eval_concurrency=2", "search.num_islands=2",
                    f"search.max_evaluations={budget}", "name=ray-pg", "ui=plain"),
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    engine = make_engine(postgres_url)
    try:
        deadline = time.monotonic() + 240
        while _train_evaluations(engine) < 8:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run made no progress"
            time.sleep(0.2)
        assert kill_processes_of(worker) > 0  # the worker node is gone, mid-run
        stdout, stderr = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert "executor: ray" in stdout and "2 node(s)" in stdout
    assert _train_evaluations(engine) == budget
    with engine.connect() as conn:
        sandbox_failures = conn.execute(select(func.count(Program.id)).where(
            Program.error == "sandbox")).scalar()
        assert sandbox_failures == 0  # the lost evaluations were re-sent, not failed
        assert conn.execute(select(Run.status)).scalar() == "finished"
    engine.dispose()
