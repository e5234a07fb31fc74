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
import contextlib
import ctypes
import dataclasses
import hashlib
import importlib.util
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from string import Template
from typing import Any

import pytest

from evoengine.config.compose import load_run_config
from evoengine.controller.setup import limits_for
from evoengine.evaluation.evaluator import Evaluator
from evoengine.evaluation.problem import Problem
from evoengine.evaluation.result import ErrorKind, EvaluationResult
from evoengine.evaluation.sandbox.base import Limits
from evoengine.evaluation.sandbox.process import ProcessSandbox
from tests.conftest import live_descendants, reap_adopted_zombies, unavailable

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")

OVERRIDES = ["problem=bin_packing_quick", "problem.timeout_s=3", "problem.cpu_s=3",
             "problem.memory_mb=768", "sandbox.max_file_mb=8"]
DOCKER_IMAGE = "evoengine-sandbox:latest"
DOCKER_LABEL = "evoengine.sandbox=1"
MARK = "evoadv"  # every file an attack creates starts with this; the probe looks for it
SECRET_PREFIX = "evo-secret-"  # the host's secret values start with this
PR_SET_CHILD_SUBREAPER = 36

TIMEOUT, MEMORY, CRASH = ErrorKind.TIMEOUT, ErrorKind.MEMORY, ErrorKind.CRASH
INVALID, SYNTAX = ErrorKind.INVALID_OUTPUT, ErrorKind.SYNTAX

BEST_FIT = """
def priority(item, bins):
    return -(bins - item)
"""

# Finds the harness module however the backend named it (the runner registers it as
# ``harness``), in sys.modules, among every object the collector tracks, or up the
# stack; None where the candidate runs in a process of its own, without the harness.
FIND_HARNESS = """
import gc
import sys
import types

def _is_harness(module):
    return (isinstance(module, types.ModuleType) and callable(getattr(module, "run", None))
            and callable(getattr(module, "_pack", None)))

def _find_harness():
    frame, frames = sys._getframe(), []
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    places = [list(sys.modules.values()), gc.get_objects()]
    places += [list(f.f_globals.values()) + list(f.f_locals.values()) for f in frames]
    for place in places:
        for module in place:
            if _is_harness(module):
                return module
    return None
"""

# Honest best fit that first checks, from inside the sandbox, that its evaluation
# starts clean; any leftover raises, so the probe is then not valid.
PROBE = """
import os
import sys
import tempfile
import threading


def _leftovers():
    found = []
    here = os.getcwd()
    extra = sorted(set(os.listdir(here)) - {__name__ + ".py"})
    if extra:
        found.append(f"work dir {here} holds {extra}")
    for folder in {here, tempfile.gettempdir(), "/tmp", "/var/tmp", "/dev/shm",
                   os.path.expanduser("~")}:
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        marked = sorted(n for n in names if n.startswith("$MARK"))
        if marked:
            found.append(f"{folder} holds {marked}")
    folder = here
    while folder != os.path.dirname(folder):  # by name: a parent may not be listable
        folder = os.path.dirname(folder)
        if os.path.exists(os.path.join(folder, "$MARK-beside")):
            found.append(f"{folder} holds $MARK-beside")
    for key, value in os.environ.items():
        if (key.startswith("EVO_ADV") or "SECRET" in key or "API_KEY" in key
                or "$SECRET_PREFIX" in value):
            found.append(f"environment variable {key} is set")
    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    fields = f.read().rpartition(b")")[2].split()
                table[int(name)] = (int(fields[1]), fields[0])
            except (OSError, IndexError, ValueError):
                continue
    me, stack, others = os.getpid(), [os.getppid()], []
    while stack:
        parent = stack.pop()
        for pid, (ppid, state) in table.items():
            if ppid == parent and pid != me:
                stack.append(pid)
                if state != b"Z":
                    others.append(pid)
    if others:
        found.append(f"processes beside this evaluation: {sorted(others)}")
    if threading.active_count() != 1:
        found.append(f"{threading.active_count()} threads at import")
    for module in list(sys.modules.values()):
        run = getattr(module, "run", None)
        if callable(run) and callable(getattr(module, "_pack", None)):
            if getattr(run, "__module__", None) != module.__name__:
                found.append("the harness's run() was replaced")
    return found


_found = _leftovers()
if _found:
    raise RuntimeError("probe found leftovers: " + "; ".join(_found))


def priority(item, bins):
    return -(bins - item)
"""


# --------------------------------------------------------------------- the host side




def _load_module(path: Path, name: str) -> types.ModuleType:
    """Import a trusted problem file on the host, outside ``sys.modules``."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _first_fit_decreasing(instance: dict) -> list[int]:
    """An offline packing (it sees every item first): far better than online best fit."""
    items, capacity = instance["items"], instance["capacity"]
    fills: list[int] = []
    chosen = [0] * len(items)
    for i in sorted(range(len(items)), key=lambda k: -items[k]):
        for b, fill in enumerate(fills):
            if fill + items[i] <= capacity:
                fills[b] += items[i]
                chosen[i] = b
                break
        else:
            fills.append(items[i])
            chosen[i] = len(fills) - 1
    return chosen


def _fingerprint(path: Path) -> tuple[str, int, int]:
    info = path.stat()
    return hashlib.sha256(path.read_bytes()).hexdigest(), info.st_mtime_ns, info.st_mode


@dataclasses.dataclass
class Host:
    """Everything on the host that attacks aim at, and the trusted reference scores."""

    problem: Problem
    limits: Limits
    secrets: dict[str, str]
    root_marker: Path
    tmp_marker: Path
    secret_file: Path
    secret_text: str
    beacon_dir: Path
    listener: socket.socket
    dns_name: str
    reference: dict[str, float]
    protected: dict[Path, tuple[str, int, int]]

    @property
    def daemon_log(self) -> Path:
        return self.beacon_dir / f"{MARK}-daemon.log"

    def fields(self) -> dict[str, str]:
        return {"MARK": MARK, "SECRET_PREFIX": SECRET_PREFIX,
                "ROOT_MARKER": str(self.root_marker), "TMP_MARKER": str(self.tmp_marker),
                "SECRET_FILE": str(self.secret_file), "BEACON_DIR": str(self.beacon_dir),
                "PORT": str(self.listener.getsockname()[1]), "DNS_NAME": self.dns_name,
                "HARNESS_PATH": str(self.problem.harness_path)}

    def connections(self) -> int:
        """Connections the listening socket received (and closed) since last asked."""
        count = 0
        while True:
            try:
                conn, _addr = self.listener.accept()
            except BlockingIOError:
                return count
            conn.close()
            count += 1

    def assert_untouched(self, result: EvaluationResult) -> None:
        """Nothing any attack aims at outside the sandbox has changed."""
        for path, fingerprint in self.protected.items():
            assert _fingerprint(path) == fingerprint, f"{path} was modified"
        assert not self.root_marker.exists(), f"the candidate created {self.root_marker}"
        assert not self.tmp_marker.exists(), f"the candidate created {self.tmp_marker}"
        assert self.connections() == 0, "the host's listening socket got a connection"
        for key, value in self.secrets.items():
            assert os.environ.get(key) == value
            assert value not in result.feedback, f"{key} leaked into the feedback"
        assert self.secret_text not in result.feedback, "a root-only host file leaked"
        assert not [k for k in os.environ if k.startswith("EVO_ADV_PLANTED")]

    def remove_markers(self) -> None:
        for path in (self.root_marker, self.tmp_marker, self.daemon_log):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _resolvable_name() -> str:
    """A name the host resolves, so that failing inside the sandbox means something."""
    for name in ("pypi.org", "example.com", "github.com"):
        with contextlib.suppress(OSError):
            socket.getaddrinfo(name, 443)
            return name
    return "pypi.org"


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


# ------------------------------------------------------------------------ backends


class ProcessWatch:
    """Process backend: our only live descendants are the pool's runners."""

    def __init__(self, backend: ProcessSandbox) -> None:
        self.backend = backend

    def leftovers(self) -> list[str]:
        runners = set(self.backend.runner_pids())
        live = live_descendants()
        problems = []
        if len(runners) > 1:
            problems.append(f"{len(runners)} runners in a pool of one: {sorted(runners)}")
        if live != runners:
            problems.append(f"processes left behind: {sorted(live - runners)} "
                            f"(runners {sorted(runners)})")
        return problems

    def after_close(self) -> list[str]:
        live = live_descendants()
        return [f"processes left after close(): {sorted(live)}"] if live else []


class DockerWatch:
    """Docker backend: the labelled containers are the pool's, and each runs nothing
    but the runner (``docker top``).

    The daemon may be shared with other test runs, so a labelled container counts
    as ours once it has been in our pool (we look after every evaluation); one of
    ours that is alive but no longer in the pool was left behind.
    """

    def __init__(self, backend: Any) -> None:
        import docker

        self.backend = backend
        self.client = docker.from_env()
        self.seen: set[str] = set()

    def _labelled(self) -> list[Any]:
        return self.client.containers.list(filters={"label": DOCKER_LABEL})

    def leftovers(self) -> list[str]:
        pool = list(self.backend.container_ids())
        self.seen.update(pool)
        problems = []
        if len(pool) > 1:
            problems.append(f"{len(pool)} containers in a pool of one: {pool}")
        if not pool:
            problems.append("the pool has no live container after an evaluation")
        for container in self._labelled():
            if not _owned(container.id, pool):
                if _owned(container.id, list(self.seen)):
                    problems.append(f"container {container.short_id} outlived the pool")
                continue
            top = container.top()
            column = top["Titles"].index("CMD")
            commands = [row[column] for row in top.get("Processes") or []]
            if len(commands) > 1 or not all("runner.py" in c for c in commands):
                problems.append(f"container {container.short_id} runs more than the "
                                f"runner: {commands}")
        return problems

    def after_close(self) -> list[str]:
        left = [c.short_id for c in self._labelled() if _owned(c.id, list(self.seen))]
        return [f"containers left after close(): {left}"] if left else []


def _owned(full_id: str, ids: list[str]) -> bool:
    return any(full_id.startswith(i) or i.startswith(full_id) for i in ids if i)


def _docker_backend() -> Any:
    try:
        from evoengine.evaluation.sandbox.docker_sandbox import (
            DockerSandbox,
            docker_unavailable_reason,
        )
    except ImportError as exc:
        unavailable(f"the docker backend cannot be imported: {exc}")
    reason = docker_unavailable_reason(DOCKER_IMAGE)
    if reason is not None:
        unavailable(reason)
    return DockerSandbox(image=DOCKER_IMAGE, pool_size=1)


@dataclasses.dataclass
class Bench:
    """One backend with its Evaluator, event loop and leftover watch."""

    name: str
    backend: Any
    evaluator: Evaluator
    loop: asyncio.Runner
    watch: Any

    def evaluate(self, code: str) -> EvaluationResult:
        try:
            result = self.loop.run(self.evaluator.evaluate(code))
        except Exception as exc:  # the engine must survive every candidate
            pytest.fail(f"Evaluator.evaluate raised {type(exc).__name__}: {exc}")
        assert isinstance(result, EvaluationResult)
        return result

    def recycle(self) -> None:
        """Close the pool, so that the next evaluation starts a fresh one: after a
        failed case, so that one weakness does not fail the cases that follow it."""
        self.loop.run(self.backend.close())
        reap_adopted_zombies()

    def assert_nothing_left(self) -> None:
        problems = self.watch.leftovers()
        assert not problems, "; ".join(problems)


def _probe_code() -> str:
    return Template(PROBE).substitute(MARK=MARK, SECRET_PREFIX=SECRET_PREFIX)


def assert_probe_clean(bench: Bench, host: Host) -> None:
    """The next evaluation in the same pool slot starts clean and scores best fit."""
    probe = bench.evaluate(_probe_code())
    assert probe.valid, f"probe after the attack: {probe.error}: {probe.feedback[-1500:]}"
    assert probe.score == host.reference["best_fit"], probe


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


# ------------------------------------------------------------------------- attacks


@dataclasses.dataclass(frozen=True)
class Attack:
    name: str
    code: str  # a string.Template over Host.fields()
    kinds: frozenset[ErrorKind]  # the error kinds that count as stopped
    says: tuple[str, ...] = ()  # one of these must appear in the feedback
    # Cases that only lie may instead be valid, scoring exactly this reference.
    true_score: str | None = None
    check: Callable[[Host, EvaluationResult], None] | None = None
    xfail: tuple[tuple[str, str], ...] = ()  # (backend, reason): a real weakness


def _host_can_fork(_host: Host, _result: EvaluationResult) -> None:
    assert subprocess.run(["true"], check=False, timeout=10).returncode == 0


def _feedback_bounded(_host: Host, result: EvaluationResult) -> None:
    assert len(result.feedback) < 64 * 1024, f"feedback of {len(result.feedback)} chars"


def _read_failed(marker: str) -> Callable[[Host, EvaluationResult], None]:
    def check(_host: Host, result: EvaluationResult) -> None:
        assert marker not in result.feedback, "the candidate read the file"
    return check


def _daemon_gone(host: Host, result: EvaluationResult) -> None:
    log = host.daemon_log
    if "daemon planted, sleeping" in result.feedback:
        return  # the beacon folder is not visible in there (a container): see the leftovers
    assert "daemon planted, logging" in result.feedback
    assert log.exists(), "the daemon said it wrote its beacon, but the host sees none"
    size = log.stat().st_size
    time.sleep(0.5)
    assert log.stat().st_size == size, "the daemon outlived the evaluation"


def _no_offline_forgery(host: Host, result: EvaluationResult) -> None:
    assert result.score != host.reference["offline_ffd"], "the forged packing was scored"


def attack(name: str, code: str, *kinds: ErrorKind, best_fit: bool = True,
           **options: Any) -> Attack:
    return Attack(name, code + (BEST_FIT if best_fit else ""), frozenset(kinds), **options)


# From inside priority(), looks for the harness and the instances everywhere a
# candidate could: the stack, sys.modules, every object the collector tracks, the
# descriptors and memory of other processes. Anything found makes it crash (so the
# case fails); with nothing found it is honest best fit.
READ_INSTANCES = """
import ctypes
import os


def _instances_like(value):
    try:
        if isinstance(value, dict):
            return "items" in value and "capacity" in value
        if isinstance(value, (list, tuple)) and value:
            return isinstance(value[0], dict) and "items" in value[0]
    except Exception:
        return False
    return False


def _look():
    found = []
    if _find_harness() is not None:
        found.append("the harness module")
    frame = sys._getframe()
    while frame is not None:
        if os.path.basename(frame.f_code.co_filename) == "harness.py":
            found.append("a harness frame on the stack")
        for key, value in list(frame.f_locals.items()):
            try:
                inner = [value, *vars(value).values()] if hasattr(value, "__dict__") else [value]
            except Exception:
                inner = [value]
            if any(_instances_like(v) or _is_harness(v) for v in inner):
                found.append(f"the instances or the harness in frame local {key}")
        frame = frame.f_back
    for value in gc.get_objects():
        if _instances_like(value):
            found.append("the instances among the collector's objects")
            break
    parent = os.getppid()
    for path in (f"/proc/{parent}/mem", f"/proc/{parent}/environ"):
        try:
            with open(path, "rb") as f:
                f.read(1)
            found.append(f"read {path}")
        except OSError:
            pass
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        if any("memfd:instances" in link for link in links):
            found.append(f"the descriptors of process {pid}")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.ptrace(16, parent, None, None) == 0:  # PTRACE_ATTACH
        libc.ptrace(17, parent, None, None)  # PTRACE_DETACH
        found.append("ptrace on the harness process")
    return found


_calls = [0]


def priority(item, bins):
    _calls[0] += 1
    if _calls[0] == 1:
        found = _look()
        if found:
            raise RuntimeError("found " + "; ".join(found))
    return -(bins - item)
"""

ATTACKS = [
    # ---- resource exhaustion
    attack("infinite_loop", """
def priority(item, bins):
    while True:
        pass
""", TIMEOUT, best_fit=False),
    attack("numpy_matmul_spin", """
import numpy as np

def priority(item, bins):
    a = np.random.default_rng(0).random((1500, 1500))
    while True:
        a = a @ a
        a /= np.abs(a).max()
""", TIMEOUT, best_fit=False),
    attack("memory_bomb", """
import numpy as np

_hog = []
while True:
    _hog.append(np.ones(8 << 20))  # 64 MB, every page written
""", MEMORY),
    attack("fork_bomb", """
import os
import time

def priority(item, bins):
    while True:
        try:
            os.fork()
        except OSError:
            time.sleep(0.01)
""", CRASH, TIMEOUT, best_fit=False, check=_host_can_fork),
    attack("thread_bomb", """
import threading
import time

_threads = []
while True:
    _thread = threading.Thread(target=time.sleep, args=(3600,), daemon=True)
    _thread.start()
    _threads.append(_thread)
""", CRASH, TIMEOUT, check=_host_can_fork),
    attack("deep_recursion", """
import sys

sys.setrecursionlimit(10 ** 8)

def _deeper(n):
    return list(map(_deeper, [n + 1]))  # through C frames: the C stack overflows

_deeper(0)
""", CRASH),
    attack("fill_workdir_one_file", """
_chunk = b"\\0" * (1 << 20)
with open("$MARK-fill.bin", "wb") as _out:
    for _ in range(4096):  # 4 GiB unless stopped
        _out.write(_chunk)
""", CRASH, says=("File too large", "No space", "file size limit")),
    attack("fill_workdir_many_files", """
_chunk = b"\\0" * (1 << 20)
for _i in range(256):  # 256 files of 4 MiB, each below max_file_mb: 1 GiB, > memory_mb
    with open(f"$MARK-fill-{_i}.bin", "wb") as _out:
        for _ in range(4):
            _out.write(_chunk)
""", CRASH, says=("No space", "Disk quota", "File too large")),
    # ---- escaping
    attack("write_root", """
with open("$ROOT_MARKER", "w") as _out:
    _out.write("escaped")
""", CRASH, says=("PermissionError", "Read-only file system")),
    attack("write_tmp", """
with open("$TMP_MARKER", "w") as _out:
    _out.write("escaped")
""", CRASH, says=("PermissionError", "Read-only file system")),
    attack("write_beside_workdir", """
import os

# The folder that holds every evaluation's work dir: a file left there would be
# seen by later candidates.
with open(os.path.join(os.path.dirname(os.getcwd()), "$MARK-beside"), "w") as _out:
    _out.write("left for the next candidate")
""", CRASH, says=("PermissionError", "Read-only file system")),
    attack("write_harness", FIND_HARNESS + """
import glob
import os

_harness = _find_harness()
_paths = [_harness.__file__] if _harness is not None else []
_paths += [p for p in ["$HARNESS_PATH", *glob.glob("/opt/evoengine/job/*.py")]
           if os.path.exists(p)]
if not _paths:
    raise RuntimeError("the attack found no harness file to write")
for _path in _paths:
    with open(_path, "a") as _out:
        _out.write("\\n# tampered\\n")
    os.utime(_path, (0, 0))
""", CRASH, says=("PermissionError", "Read-only file system")),
    attack("read_etc_shadow", """
with open("/etc/shadow") as _f:
    raise RuntimeError("read /etc/shadow: " + _f.read())
""", CRASH, says=("PermissionError", "FileNotFoundError"),
           check=_read_failed("read /etc/shadow:")),
    attack("read_host_root_only_file", """
with open("$SECRET_FILE") as _f:
    raise RuntimeError("read the host file: " + _f.read())
""", CRASH, says=("PermissionError", "FileNotFoundError"),
           check=_read_failed("read the host file:")),
    attack("read_environment_keys", """
import os

_found = {f"env {k}": v for k, v in os.environ.items() if "KEY" in k or "SECRET" in k}
for _pid in os.listdir("/proc"):
    if _pid.isdigit():
        try:
            with open(f"/proc/{_pid}/environ", "rb") as _f:
                _pairs = _f.read().decode("latin-1").split("\\0")
        except OSError:
            continue
        _found.update({f"pid {_pid}": p for p in _pairs if "KEY" in p or "SECRET" in p})
os.environ["EVO_ADV_PLANTED"] = "left for the next candidate"
print("found:", _found)
raise RuntimeError(f"found {len(_found)} keys: {_found}")
""", CRASH, says=("found",)),
    attack("tcp_to_host_loopback", """
import socket

with socket.create_connection(("127.0.0.1", $PORT), timeout=1) as _s:
    _s.sendall(b"escaped")
""", CRASH),
    attack("tcp_to_public_address", """
import socket

socket.create_connection(("1.1.1.1", 53), timeout=1).close()
""", CRASH),
    attack("dns_lookup", """
import socket

socket.getaddrinfo("$DNS_NAME", 443)
""", CRASH, says=("gaierror",)),
    attack("daemon_outlives_run", """
import os
import time

_r, _w = os.pipe()
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        _log = os.path.join("$BEACON_DIR", "$MARK-daemon.log")
        _said = False
        while True:  # a host-visible beacon where there is one, else just living on
            try:
                with open(_log, "a") as _out:
                    _out.write("alive\\n")
                _logged = b"logging"
            except OSError:
                _logged = b"sleeping"
            if not _said:
                os.write(_w, _logged)
                _said = True
            time.sleep(0.05)
    os._exit(0)
os.close(_w)
_up = os.read(_r, 16).decode()
raise RuntimeError(f"daemon planted, {_up}" if _up else "the daemon did not start")
""", CRASH, says=("daemon planted",), check=_daemon_gone),
    # ---- fighting the runner
    attack("ignore_sigterm", """
import signal
import time

for _sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1):
    signal.signal(_sig, signal.SIG_IGN)

def priority(item, bins):
    while True:
        time.sleep(0.1)
""", TIMEOUT, best_fit=False),
    attack("signal_the_runner", """
import os
import signal

os.kill(os.getppid(), signal.SIGINT)  # a Python runner dies of KeyboardInterrupt
os.kill(os.getppid(), signal.SIGTERM)
""", CRASH, true_score="best_fit", says=("PermissionError",)),
    attack("close_stdout_stderr", """
import os
import numpy as np

os.close(1)
os.close(2)

def priority(item, bins):
    print("placing", item)  # stdout is gone
    return -(bins - item)
""", CRASH, best_fit=False, says=("Bad file descriptor",)),
    attack("close_every_fd", """
import os

os.closerange(0, 1 << 16)  # the result channel too
""", CRASH),
    attack("flood_stdout_stderr", """
import sys

_flood = "x" * (50 << 20)
sys.stdout.write(_flood)
sys.stderr.write(_flood)
sys.stdout.flush()
sys.stderr.flush()
""", CRASH, INVALID, check=_feedback_bounded),
    attack("fake_result_line", """
import json
import sys

_perfect = json.dumps({"valid": True, "score": 0.0, "error": None, "metrics": {}})
for _stream in (sys.stdout, sys.stderr, sys.__stdout__):
    print('{"score": 0}', file=_stream)
    print(_perfect, file=_stream)
    print(json.dumps([[0] * 500, [0] * 500]), file=_stream)
    _stream.flush()

def priority(item, bins):
    return bins - item  # worst fit: a fresh bin for every item
""", INVALID, best_fit=False, true_score="worst_fit"),
    attack("harness_patched_all_in_bin_0", FIND_HARNESS + """
(_find_harness() or types.SimpleNamespace()).run = lambda candidate, instances: [
    [0] * len(instance["items"]) for instance in instances]
""", INVALID, true_score="best_fit", says=("capacity",)),
    attack("harness_patched_negative_indices", FIND_HARNESS + """
(_find_harness() or types.SimpleNamespace()).run = lambda candidate, instances: [
    [-1] * len(instance["items"]) for instance in instances]
""", INVALID, true_score="best_fit", says=("out of range",)),
    attack("harness_patched_float_indices", FIND_HARNESS + """
(_find_harness() or types.SimpleNamespace()).run = lambda candidate, instances: [
    [float("nan")] + [float(i) for i in range(1, len(instance["items"]))]
    for instance in instances]
""", INVALID, true_score="best_fit", says=("float",)),
    attack("harness_patched_offline_packing", FIND_HARNESS + """
def _offline(candidate, instances):
    packings = []
    for instance in instances:  # first fit decreasing: sees every item first
        items, capacity = instance["items"], instance["capacity"]
        fills, chosen = [], [0] * len(items)
        for i in sorted(range(len(items)), key=lambda k: -items[k]):
            for b, fill in enumerate(fills):
                if fill + items[i] <= capacity:
                    fills[b] += items[i]
                    chosen[i] = b
                    break
            else:
                fills.append(items[i])
                chosen[i] = len(fills) - 1
        packings.append(chosen)
    return packings

(_find_harness() or types.SimpleNamespace()).run = _offline
""", INVALID, true_score="best_fit", check=_no_offline_forgery),
    attack("read_instances_from_priority", FIND_HARNESS + READ_INSTANCES, true_score="best_fit",
           best_fit=False),
    attack("numpy_patched", """
import numpy as np

_asarray = np.asarray
# The harness reads priorities through np.asarray: every bin ties, so first fit wins.
np.asarray = lambda a, *args, **kwargs: _asarray(a, *args, **kwargs) * 0
""", INVALID, true_score="best_fit"),
    # ---- bad results
    attack("priority_nan", """
import numpy as np

def priority(item, bins):
    return np.full(bins.shape, np.nan)
""", CRASH, INVALID, best_fit=False, says=("priority nan", "must be finite")),
    attack("priority_inf", """
import numpy as np

def priority(item, bins):
    return np.full(bins.shape, np.inf)
""", CRASH, INVALID, best_fit=False, says=("priority inf", "must be finite")),
    attack("priority_wrong_shape", """
import numpy as np

def priority(item, bins):
    return np.zeros(bins.size + 1)
""", CRASH, INVALID, best_fit=False, says=("shape",)),
    attack("priority_wrong_type", """
def priority(item, bins):
    return ["high"] * len(bins)
""", CRASH, INVALID, best_fit=False, says=("dtype",)),
    # ---- broken code
    attack("sys_exit_at_import", """
import sys

sys.exit(0)
""", CRASH, says=("exit",)),
    attack("os_exit_mid_run", """
import os

_calls = [0]

def priority(item, bins):
    _calls[0] += 1
    if _calls[0] == 100:
        os._exit(0)
    return -(bins - item)
""", CRASH, best_fit=False, says=("exit",)),
    attack("missing_module", """
import evoadv_no_such_module  # noqa: F401
""", CRASH, says=("ModuleNotFoundError",)),
    attack("syntax_error", """
def priority(item, bins)
    return -(bins - item)
""", SYNTAX, best_fit=False, says=("SyntaxError",)),
    attack("sleep_past_timeout", """
import time

def priority(item, bins):
    time.sleep(60)
""", TIMEOUT, best_fit=False),
]


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
