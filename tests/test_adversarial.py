"""Hostile candidates against both sandbox backends, through the engine's real Evaluator.

Every case is a bin-packing program that defines ``priority(item, bins)`` (best fit
unless the attack needs something else, so that where the attack is stopped without
an error the program would simply work) and carries one real attack, at import time
or inside ``priority``. The problem is ``bin_packing_quick``, scored on the host by
its trusted ``score.py``. For each case and backend the test checks what a user of
the engine relies on:

* the engine keeps running: ``Evaluator.evaluate`` returns a result, never raises;
* the program is invalid with the expected error kind and no score (cases that
  only lie or tamper with the harness may instead score exactly what their
  ``priority`` earns, never more);
* nothing outside the sandbox changed: the harness file, marker paths on the
  host, a host file readable only by root, a listening socket, the host's
  secrets (never in the feedback);
* no process is left behind: process backend, the only live descendants of this
  test process (made a child subreaper, so escaped daemons are reparented here)
  are the pool's runners; docker, the labelled containers are exactly the
  pool's and none holds more processes than after a clean evaluation;
* the next evaluation in the same pool slot (``pool_size=1``) starts clean: a
  probe that is honest best fit, and that first looks for leftovers from inside
  the sandbox, scores exactly best fit's score, computed once on the host.

A case that shows a real weakness is a strict ``xfail`` naming it, per backend.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import secrets
import shutil
import socket
import sys
import tempfile
import types
from collections.abc import Iterator
from pathlib import Path
from string import Template
from typing import Any

import pytest

from evoengine.config.compose import load_run_config
from evoengine.controller.setup import limits_for
from evoengine.evaluation.evaluator import Evaluator
from evoengine.evaluation.problem import Problem
from evoengine.evaluation.result import EvaluationResult
from evoengine.evaluation.sandbox.process import ProcessSandbox
from tests.adversarial_bench import (
    MARK,
    SECRET_PREFIX,
    Bench,
    DockerWatch,
    Host,
    ProcessWatch,
    _docker_backend,
    _fingerprint,
    _first_fit_decreasing,
    _load_module,
    _resolvable_name,
    assert_probe_clean,
)
from tests.adversarial_cases import ATTACKS, CRASH, Attack
from tests.conftest import reap_adopted_zombies

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")

OVERRIDES = ["problem=bin_packing_quick", "problem.timeout_s=3", "problem.cpu_s=3",
             "problem.memory_mb=768", "sandbox.max_file_mb=8"]
PR_SET_CHILD_SUBREAPER = 36


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module", autouse=True)
def _subreaper() -> Iterator[None]:
    """Processes that escape a runner are reparented to us and show up as ours."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    yield
    libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
    reap_adopted_zombies()


@pytest.fixture(scope="module")
def host() -> Iterator[Host]:
    token = secrets.token_hex(6)
    # Secrets go into the host environment before any backend exists.
    planted = {"EVO_ADVERSARIAL_SECRET": SECRET_PREFIX + secrets.token_hex(12),
               "OPENAI_API_KEY": SECRET_PREFIX + "sk-" + secrets.token_hex(12)}
    saved = {key: os.environ.get(key) for key in planted}
    os.environ.update(planted)

    config, _node = load_run_config(OVERRIDES)
    problem = Problem(config.problem)
    instances = problem.instances("train")
    harness = _load_module(problem.harness_path, "adversarial_host_harness")
    seed = _load_module(problem.folder / config.problem.evolve_file, "adversarial_host_seed")
    worst_fit = types.SimpleNamespace(priority=lambda item, bins: bins - item)

    def trusted_score(outputs: list) -> float:
        return float(problem.scorer.score(outputs, instances).score)

    reference = {
        "best_fit": trusted_score(harness.run(seed, instances)),
        "worst_fit": trusted_score(harness.run(worst_fit, instances)),
        "offline_ffd": trusted_score([_first_fit_decreasing(inst) for inst in instances]),
    }
    assert reference["offline_ffd"] > reference["best_fit"] > reference["worst_fit"]

    tmp = Path(tempfile.gettempdir())
    secret_file = tmp / f"evohost-{token}-secret"
    secret_text = f"host-file-secret-{secrets.token_hex(12)}"
    secret_file.write_text(secret_text)
    secret_file.chmod(0o600)
    beacon_dir = tmp / f"evohost-{token}-beacon"
    beacon_dir.mkdir()
    beacon_dir.chmod(0o777)  # so a daemon could report from any uid, if it survived
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    protected = [problem.harness_path, problem.folder / config.problem.evolve_file,
                 problem.folder / config.problem.scorer, secret_file]
    limits = limits_for(config)
    assert (limits.timeout_s, limits.cpu_s, limits.memory_mb, limits.max_file_mb) == (3, 3, 768, 8)
    found = Host(problem=problem, limits=limits, secrets=planted,
                 root_marker=Path("/") / f"{MARK}-{token}-root",
                 tmp_marker=tmp / f"{MARK}-{token}-tmp", secret_file=secret_file,
                 secret_text=secret_text, beacon_dir=beacon_dir, listener=listener,
                 dns_name=_resolvable_name(), reference=reference,
                 protected={path: _fingerprint(path) for path in protected})
    try:
        yield found
    finally:
        listener.close()
        found.remove_markers()
        secret_file.unlink()
        shutil.rmtree(beacon_dir, ignore_errors=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module",
                params=["process", pytest.param("docker", marks=pytest.mark.docker)])
def bench(request: pytest.FixtureRequest, host: Host) -> Iterator[Bench]:
    if request.param == "process":
        backend: Any = ProcessSandbox(pool_size=1)
        watch: Any = ProcessWatch(backend)
    else:
        backend = _docker_backend()
        watch = DockerWatch(backend)
    loop = asyncio.Runner()
    found = Bench(request.param, backend,
                  Evaluator(host.problem, backend, host.limits), loop, watch)
    try:
        assert_probe_clean(found, host)
        found.assert_nothing_left()
        yield found
    finally:
        loop.run(backend.close())
        loop.close()
        reap_adopted_zombies()
        left = watch.after_close()
    assert not left, "; ".join(left)


# --------------------------------------------------------------------- tests


def _assert_outcome(case: Attack, result: EvaluationResult, host: Host) -> None:
    detail = f"{result.error}: {result.feedback[-1500:]}"
    if result.valid and case.true_score is not None:
        # Allowed for cases that only lie: the score is what priority() truly earns.
        assert result.score == host.reference[case.true_score], (
            f"scored {result.score}, but its priority earns "
            f"{host.reference[case.true_score]}")
        assert result.score <= host.reference["best_fit"]
        return
    assert not result.valid, f"the attack was not stopped: valid with score {result.score}"
    assert result.score is None
    assert result.error in case.kinds, f"expected {sorted(k.value for k in case.kinds)}, " \
                                       f"got {detail}"
    if case.says:
        assert any(s in result.feedback for s in case.says), (
            f"feedback mentions none of {case.says}: {detail}")


@pytest.mark.parametrize("case", ATTACKS, ids=lambda case: case.name)
def test_attack_is_contained(bench: Bench, host: Host, case: Attack,
                             request: pytest.FixtureRequest) -> None:
    for backend_name, reason in case.xfail:
        if backend_name == bench.name:
            request.applymarker(pytest.mark.xfail(strict=True, reason=reason))
    try:
        result = bench.evaluate(Template(case.code).substitute(host.fields()))
        _assert_outcome(case, result, host)
        host.assert_untouched(result)
        if case.check is not None:
            case.check(host, result)
        bench.assert_nothing_left()
        assert_probe_clean(bench, host)
        bench.assert_nothing_left()
    except BaseException:
        bench.recycle()
        raise
    finally:
        host.remove_markers()



def test_without_a_candidate_process_the_attacks_reach_the_harness(host: Host) -> None:
    """``candidate_process: false`` (for problems where any feasible output is fine)
    imports the candidate next to the harness: three attacks above then succeed,
    which shows they are real and that the default is what stops them."""
    config, _node = load_run_config([*OVERRIDES, "problem.candidate_process=false"])
    problem = Problem(config.problem)
    assert problem.job("train").candidate_process is False
    backend = ProcessSandbox(pool_size=1)
    loop = asyncio.Runner()
    try:
        evaluator = Evaluator(problem, backend, host.limits)
        cases = {case.name: case for case in ATTACKS}

        def evaluate(name: str) -> EvaluationResult:
            code = Template(cases[name].code).substitute(host.fields())
            return loop.run(evaluator.evaluate(code))

        looked = evaluate("read_instances_from_priority")
        assert looked.error is CRASH and "found the harness module" in looked.feedback, looked
        assert "the instances" in looked.feedback, looked.feedback[-1500:]
        forged = evaluate("harness_patched_offline_packing")
        assert forged.valid and forged.score == host.reference["offline_ffd"], forged
        patched = evaluate("numpy_patched")
        assert patched.valid and patched.score != host.reference["best_fit"], patched
    finally:
        loop.run(backend.close())
        loop.close()
        reap_adopted_zombies()
