"""Candidate source code, as strings, that tests/test_adversarial.py evaluates.

These are not test code: each constant is the text of (part of) a bin-packing
candidate program, handed to the engine's Evaluator and run inside a sandbox.
``BEST_FIT`` is the honest ``priority`` that attacks append where they need one;
``FIND_HARNESS`` and ``READ_INSTANCES`` are building blocks that attacks prepend to
look for the harness and its instances from inside the candidate; ``PROBE`` is the
honest best fit that first checks, from inside the sandbox, that its evaluation
starts clean. Some are ``string.Template`` texts (``$MARK`` and other fields are
filled in on the host before the code is evaluated).
"""

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


# First fit decreasing, an offline packing (it sees every item first, so it packs far
# better than online best fit): the attack that patches the harness returns it, and
# the host computes its score from the same lines (adversarial_bench).
FIRST_FIT_DECREASING = """
def _first_fit_decreasing(instance):
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
    return chosen
"""
