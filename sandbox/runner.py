"""The resident runner of the process sandbox: a fork server for candidate programs.

Started once per harness by the host (``evoengine.evaluation.sandbox.process``) as
``python -I -B runner.py --root DIR --work-mb N --keep HARNESS --sys-path JSON`` with
a clean environment.
``-I`` keeps the host's ``PYTHON*`` variables, user site and working directory out;
site-packages stay importable because the host passes its ``sys.path`` in
``--sys-path``. The interpreter start-up and the harness's imports (numpy) are paid
once here; each evaluation is one ``fork()`` of this warm process (DESIGN.md,
"Sandbox backend").

Protocol on stdin/stdout (moved off fds 0/1 at once, so nothing the harness prints
can corrupt it): frames of a 4-byte big-endian length and UTF-8 JSON.

* runner -> host at start: ``{"type": "hello", "network_isolated": bool,
  "files_isolated": bool, "work_mb": int | None, ...}``
* ``{"type": "setup", "harness_path", "module_name", "preload", "candidate_process"}``,
  then one frame whose body is the instances as JSON (kept unparsed in a memfd:
  ``runner_channel.store_frame``) -> ``{"type": "ready", "ok", "message"}``
* ``{"type": "eval", "code", "limits": {...}, "env"?: {...}}`` -> ``{"type": "result", "ok",
  "output_json", "error", "message", "stderr_tail", "wall_s", "cpu_s", "retire"}``;
  ``output_json`` is the harness's return value as JSON text (untrusted, the host
  decodes it); ``retire`` asks the host to replace this runner.

At start the runner ignores every signal that could end it (a candidate with our
uid, as in Docker, could send one; each child restores the old dispositions) and,
where the kernel allows, enters a network namespace and a private mount and IPC
namespace (``runner_os.py``). In the latter the host's world-writable folders
(``/tmp``, ``/var/tmp``, ``/dev/shm``, ...) are read-only and ``--root`` is a tmpfs
of ``--work-mb`` MiB: whatever a candidate writes lives in capped memory and goes
with us. Docker passes ``--no-netns --no-mountns``: the container does all that.

Per evaluation (``Runner.evaluate``): a fresh work dir under ``--root``, one fork,
the child confines itself (``runner_child.py``: own process group, rlimits,
``nobody`` when we are root, stdout/stderr to an unlinked file, the result on a pipe
of its own) and, with ``candidate_process`` (the default), forks the candidate into
a process of its own that the harness calls over a pipe (``runner_candidate.py``);
without it, imports the candidate next to the harness. This process watches the
pipe against the wall-clock deadline and the output cap, then kills the group and
sweeps every remaining descendant (we are a child subreaper, so ``setsid()`` and
double forks do not escape), wipes everything under ``--root`` (the next evaluation
starts from an empty root; all three in ``runner_reap.py``) and classifies how the
child ended (``classify``).

Stdlib only, no engine imports: the same files serve inside sandbox images.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import gc
import importlib.util
import json
import os
import signal
import sys
import tempfile
import time
from typing import Any

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.append(_HERE)  # -I leaves our own folder off sys.path; the helpers live there
sysos = importlib.import_module("runner_os")
reap = importlib.import_module("runner_reap")
child = importlib.import_module("runner_child")
split = importlib.import_module("runner_candidate")
channel = importlib.import_module("runner_channel")
recv_frame, send_frame = channel.recv_frame, channel.send_frame

_TAIL_CHARS = 2000
_MEMORY_HINTS = ("MemoryError", "annot allocate", "bad_alloc", "out of memory")
_EXIT = os._exit


# ------------------------------------------------------------- evaluation


class Runner:
    """State kept between messages: the harness, the instances, the work root."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.drop_to_nobody = os.geteuid() == 0
        self.root_mode = 0o711 if self.drop_to_nobody else 0o700
        self.signals: dict[int, Any] = {}  # dispositions each child restores
        self.harness: Any = None
        self.instances: list | None = None  # parsed only when candidate_process is off
        self.instances_fd: int | None = None  # their JSON, unparsed (runner_channel.store_frame)
        self.instances_size = 0
        self.candidate_process = True
        self.module_name = "candidate"
        self._tasks = (0, -1.0)  # (tasks of the sandbox uid, when counted)
        self._import_fds: list[int] | None = None  # see runner_child.reroute_imports

    def setup(self, message: dict, stored: tuple[int, int]) -> dict:
        """Import the preload modules and the harness once, for every later fork.
        ``stored``: the instances frame that followed, kept unparsed in a memfd."""
        if self.instances_fd is not None:
            os.close(self.instances_fd)
        self.instances_fd, self.instances_size = stored
        self.candidate_process = bool(message.get("candidate_process", True))
        warnings = []
        for name in message.get("preload") or ():
            try:
                importlib.import_module(name)
            except Exception as exc:
                warnings.append(f"preload {name}: {type(exc).__name__}: {exc}")
        spec = importlib.util.spec_from_file_location("harness", message["harness_path"])
        harness = importlib.util.module_from_spec(spec)
        sys.modules["harness"] = harness
        spec.loader.exec_module(harness)
        if not callable(getattr(harness, "run", None)):
            raise ValueError(f"{message['harness_path']} defines no run(candidate, instances)")
        self.harness = harness
        self.instances = None
        if not self.candidate_process:  # the candidate shares this memory anyway
            self.instances = channel.load_stored(self.instances_fd, self.instances_size)
        self.module_name = message.get("module_name") or "candidate"
        if self.drop_to_nobody and self._import_fds is None:
            self._import_fds = child.reroute_imports()
        gc.collect()
        gc.freeze()  # collections in a child then leave the shared warm heap uncopied
        return {"type": "ready", "ok": True, "message": "; ".join(warnings)}

    def evaluate(self, code: str, limits: dict[str, Any],
                 env: dict[str, str] | None = None) -> dict:
        """Fork one child for ``code``, supervise it, sweep, clean up, classify.
        ``env``: variables this evaluation's child gets (e.g. a service's token)."""
        if self.harness is None:
            raise RuntimeError("eval before setup")
        out_fd, out_path = tempfile.mkstemp(prefix="eval-", suffix=".out", dir=self.root)
        os.unlink(out_path)  # the open file is enough; the candidate never sees it
        workdir = ""
        try:
            workdir = self._make_workdir()
            path = os.path.join(workdir, f"{self.module_name}.py")
            with open(path, "w", encoding="utf-8") as f:
                f.write(code)
            if self.drop_to_nobody:
                os.chown(path, child.NOBODY, child.NOBODY)
            outcome = self._fork_and_watch(code, workdir, out_fd, limits, env or {})
        finally:
            clean = reap.sweep()
            tail = _read_tail(out_fd)
            os.close(out_fd)
            clean = reap.wipe(self.root, self.root_mode) and clean
            sysos.reseed_random()  # for the next child (see runner_os.fork_lean)
        reply = classify(outcome, limits)
        if workdir:  # the folder's random name would make the same program's feedback
            # (and so the prompts built from it) differ from run to run
            for name in ("message", "stderr_tail"):
                if isinstance(reply.get(name), str):
                    reply[name] = reply[name].replace(workdir, "<sandbox>")
            tail = tail.replace(workdir, "<sandbox>")
        reply.update(type="result", stderr_tail=tail, retire=not clean)
        if reply["error"] in ("crash", "timeout") and _looks_like_memory(reply, tail):
            reply["error"] = "memory"
        return reply

    def _make_workdir(self) -> str:
        """A fresh work dir under the root. ``nobody`` gets one of its own in our
        0711 root. A candidate with our uid works one level lower, below a folder
        it may not write to, so that it cannot drop files beside its work dir for
        the next one; should it chmod its way in anyway, ``wipe`` clears it all."""
        workdir = tempfile.mkdtemp(prefix="eval-", dir=self.root)
        if self.drop_to_nobody:
            os.chown(workdir, child.NOBODY, child.NOBODY)
            return workdir
        inner = os.path.join(workdir, "work")
        os.mkdir(inner, 0o700)
        os.chmod(workdir, 0o500)
        return inner

    def _tasks_of_sandbox_uid(self) -> int:
        """RLIMIT_NPROC counts every task of the uid, so the limit must start from
        what already runs. Scanning /proc costs about 25 us a process; a count up
        to a second old is good enough between back-to-back evaluations."""
        count, when = self._tasks
        now = time.monotonic()
        if now - when > 1.0:
            uid = child.NOBODY if self.drop_to_nobody else os.getuid()
            count, when = reap.count_tasks(uid), now
            self._tasks = (count, when)
        return count

    def _fork_and_watch(self, code: str, workdir: str, out_fd: int,
                        limits: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
        # + 1: the candidate process, when there is one, is ours, not the candidate's
        nproc = (self._tasks_of_sandbox_uid() + int(limits["max_processes"])
                 + int(self.candidate_process))
        import_fds = self._import_fds or []
        job = {"harness": self.harness, "module_name": self.module_name, "code": code,
               "workdir": workdir, "import_fds": import_fds}
        if self.candidate_process:
            # RLIMIT_NPROC goes on the candidate process alone: the harness process's
            # fork of it must not fail for what other evaluations run meanwhile.
            job.update(instances_fd=self.instances_fd, instances_size=self.instances_size,
                       nproc=nproc)
            body, keep, restore = split.evaluate, [self.instances_fd, *import_fds], False
            nproc = None
        else:
            job["instances"] = self.instances
            body, keep, restore = child.evaluate, import_fds, True
        read_fd, write_fd = os.pipe()
        start = time.monotonic()
        pid = sysos.fork_lean()
        if pid == 0:
            try:
                os.environ.update({str(k): str(v) for k, v in env.items()})
                child.run_child(body=body, job=job, out_fd=out_fd, result_fd=write_fd,
                                keep_fds=keep, limits=limits, nproc=nproc,
                                drop_to_nobody=self.drop_to_nobody, signals=self.signals,
                                restore=restore)
            finally:
                _EXIT(1)
        os.close(write_fd)
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)  # also done by the child; whichever runs first wins
        try:
            return reap.watch(pid, read_fd, limits, start)
        finally:
            os.close(read_fd)


def _read_tail(fd: int) -> str:
    try:
        size = os.fstat(fd).st_size
        raw = os.pread(fd, _TAIL_CHARS * 4, max(0, size - _TAIL_CHARS * 4))
    except OSError:
        return ""
    return raw.decode("utf-8", errors="replace")[-_TAIL_CHARS:]


_FILE_TOO_LARGE = f"[Errno {errno.EFBIG}]"


def _looks_like_memory(reply: dict, tail: str) -> bool:
    return reply.get("signal") in ("SIGSEGV", "SIGABRT", "SIGBUS", "SIGKILL") and any(
        hint in tail for hint in _MEMORY_HINTS)


def classify(outcome: dict[str, Any], limits: dict[str, Any]) -> dict[str, Any]:
    """Turn how the child ended into the result message (see module docstring)."""
    reply: dict[str, Any] = {"ok": False, "output_json": None, "error": "crash", "message": "",
                             "wall_s": outcome["wall_s"], "cpu_s": outcome["cpu_s"]}
    status, data = outcome["status"], outcome["data"]
    if outcome["timed_out"]:
        reply.update(error="timeout",
                     message=f"wall-clock limit of {limits['timeout_s']} s exceeded "
                             "(problem.timeout_s)")
    elif outcome["overflow"]:
        reply.update(error="invalid_output",
                     message=f"output larger than {limits['max_output_bytes']} bytes "
                             "(sandbox.max_output_mb)")
    elif os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:  # a real-time signal has no name
            name = f"signal {sig}"
        reply["signal"] = name
        cpu_limited = outcome["cpu_s"] >= float(limits["cpu_s"]) - 0.05
        if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu_limited):
            reply.update(error="timeout", message=f"CPU limit of {limits['cpu_s']} s exceeded "
                                                  "(problem.cpu_s)")
        elif sig == signal.SIGXFSZ:
            reply["message"] = (f"file size limit of {limits['max_file_mb']} MB exceeded "
                                "(sandbox.max_file_mb)")
        else:
            reply["message"] = f"the program was killed by {name}"
    elif data[:1] == b"R" and os.WEXITSTATUS(status) == 0:
        try:
            reply.update(ok=True, error=None, output_json=data[1:].decode("utf-8"))
        except UnicodeDecodeError:
            reply.update(error="invalid_output", message="output is not UTF-8 JSON")
    elif data[:1] == b"E":
        try:
            reported = json.loads(data[1:])
            reply.update(error=str(reported["error"]), message=str(reported["message"]))
            if _FILE_TOO_LARGE in reply["message"]:  # SIGXFSZ is ignored: write() fails
                reply["message"] += (f"; the file size limit is {limits['max_file_mb']} MB "
                                     "(sandbox.max_file_mb)")
        except (ValueError, KeyError, TypeError):
            reply["message"] = "the program left a malformed error report"
    else:
        code = os.WEXITSTATUS(status)
        reply["message"] = (f"the program exited early (exit status {code}) "
                            "before the harness returned a result")
    return reply


# ------------------------------------------------------------------ main


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="folder for per-evaluation work dirs")
    parser.add_argument("--sys-path", default="[]", help="JSON list appended to sys.path")
    parser.add_argument("--no-netns", action="store_true", help="do not cut the network")
    parser.add_argument("--no-mountns", action="store_true",
                        help="no private mounts (no work tmpfs, shared folders left as they are)")
    parser.add_argument("--work-mb", type=int, default=256,
                        help="size of the tmpfs put on --root for the work dirs")
    parser.add_argument("--keep", action="append", default=[],
                        help="a path the runner must still read in its mount namespace")
    parser.add_argument("--hide", action="append", default=[],
                        help="a folder candidates must not read (covered by an empty tmpfs)")
    parser.add_argument("--folder", default=None,
                        help="the host's folder for this runner, deleted when we exit on EOF")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Serve setup and eval messages on stdin/stdout until the host closes stdin."""
    signals = child.ignore_signals()  # before anything else
    args = _parse_args(argv)
    for entry in json.loads(args.sys_path):
        if entry not in sys.path:
            sys.path.append(entry)
    sys.dont_write_bytecode = True
    proto_in, proto_out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    root = args.root or tempfile.mkdtemp(prefix="evo-runner-")
    os.makedirs(root, exist_ok=True)
    # Deleted when we exit on our own (the host vanished): the host's folder for us,
    # or the root we made. Its parent's descriptor, opened before our mounts change,
    # still reaches the host's writable view of it; no child keeps it (_confine).
    owned = os.path.abspath(args.folder or root) if args.folder or not args.root else None
    owned_at = (os.open(os.path.dirname(owned), os.O_RDONLY | os.O_DIRECTORY)
                if owned else None)
    runner = Runner(root)
    runner.signals = signals
    if runner.drop_to_nobody:
        os.chmod(root, 0o711)  # nobody may enter its own work dir, not list the others
    isolated, private = sysos.enter_namespaces(network=not args.no_netns,
                                               files=not args.no_mountns)
    files = private and sysos.isolate_files(root, args.work_mb, [*sys.path, *args.keep],
                                            hide=args.hide)
    os.chdir(root)  # not the host folder we were started in
    sysos.prctl(sysos.PR_SET_CHILD_SUBREAPER, 1)
    sysos.prctl(sysos.PR_SET_DUMPABLE, 0)  # a same-uid candidate cannot ptrace us
    if not child.prepare_children():  # no_new_privs from here on, children included
        print("runner: PR_SET_NO_NEW_PRIVS failed", file=sys.stderr)
    try:
        send_frame(proto_out, {"type": "hello", "network_isolated": isolated,
                               "files_isolated": files, "work_mb": args.work_mb if files else None,
                               "pid": os.getpid(), "drop_to_nobody": runner.drop_to_nobody,
                               "python": sys.version.split()[0]})
        _serve(runner, proto_in, proto_out)
    except BrokenPipeError:
        pass
    # The host closed the pipes: it is gone (killed, maybe), so nobody else will
    # tidy up. When it replaces us it kills us instead, and keeps our log.
    reap.sweep()
    reap.wipe(root, runner.root_mode)
    if owned:
        if files:
            sysos.umount(root)  # our tmpfs, over the folder that now goes
        sysos.remove_at(owned_at, os.path.basename(owned))
    return 0


def _serve(runner: Runner, proto_in: int, proto_out: int) -> None:
    while True:
        message = recv_frame(proto_in)
        if message is None:
            return
        kind = message.get("type")
        try:
            if kind == "setup":
                stored = channel.store_frame(proto_in)  # the instances, next frame
                if stored is None:
                    return
                reply = runner.setup(message, stored)
            elif kind == "eval":
                reply = runner.evaluate(message["code"], message["limits"],
                                        message.get("env"))
            else:
                raise ValueError(f"unknown message type {kind!r}")
        except Exception as exc:
            reply = {"type": "ready" if kind == "setup" else "result", "ok": False,
                     "error": "sandbox", "message": f"runner: {type(exc).__name__}: {exc}",
                     "retire": True}
        send_frame(proto_out, reply)
        reply = message = None  # a later candidate process is forked with this frame live


if __name__ == "__main__":
    sys.exit(main())
