"""The candidate in a process of its own (``candidate_process``, the default).

What a user relies on: a harness written for an imported candidate module works
unchanged (values, numpy arrays, keyword arguments, exceptions of the same type with
the candidate's own message and traceback), the candidate's CPU time counts, and
nothing the candidate sends back can do more than fail its own evaluation: the
codec decodes plain values only and rejects anything malformed.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from evoengine.evaluation.result import ErrorKind
from evoengine.evaluation.sandbox.base import HarnessJob, Limits
from evoengine.evaluation.sandbox.process import ProcessSandbox
from evoengine.paths import resource_dir
from tests.test_process_sandbox import (
    _subreaper,  # noqa: F401 - escaped processes come here
    run,
    sandbox_of,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")

LIMITS = Limits(timeout_s=5.0, cpu_s=5, memory_mb=512, max_processes=16,
                max_output_bytes=100_000)

# Calls the candidate the ways a harness might, and reports what came back.
TYPES_HARNESS = '''
import numpy as np

def run(candidate, instances):
    grid = np.arange(6, dtype=np.int32).reshape(2, 3)
    back = candidate.echo(grid, np.float64(1.5), flag=np.bool_(True), rows=[1, (2, 3)])
    array, scalar, flag, rows = back
    array[0, 0] = 99  # what comes back is the harness's own, writable
    try:
        candidate.fail()
        caught = "nothing"
    except KeyError as exc:
        caught = f"KeyError {exc.args[0]}"
    return {
        "array": [str(array.dtype), list(array.shape), array.tolist()],
        "types": [type(scalar).__name__, type(flag).__name__, repr(rows)],
        "caught": caught,
        "missing": getattr(candidate, "not_there", None) is None,
        "module": type(candidate).__name__,
    }
'''

TYPES_CANDIDATE = '''
import numpy as np

def echo(grid, scalar, flag, rows):
    grid += 1  # the candidate's copy is writable too
    return grid, np.float32(scalar), flag, rows

def fail():
    raise KeyError("k")
'''

FORGE_REPLY = '''
import os, fcntl, struct

def f(x):
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
            writable = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_WRONLY
        except OSError:
            continue
        if link.startswith("pipe:") and writable:
            os.write(fd, PAYLOAD)
    return x
'''


@pytest.fixture
def sandbox() -> Iterator[ProcessSandbox]:
    yield from sandbox_of(pool_size=1)


def _job(tmp_path: Path, harness_code: str, candidate_process: bool = True) -> HarnessJob:
    harness = tmp_path / "harness.py"
    harness.write_text(harness_code)
    return HarnessJob(key=f"cp/{tmp_path.name}/{candidate_process}", harness_path=harness,
                      instances=[1, 2, 3], candidate_process=candidate_process)


@pytest.mark.parametrize("candidate_process", [True, False])
def test_a_harness_sees_the_same_values_either_way(sandbox, tmp_path, candidate_process):
    result = run(sandbox, TYPES_CANDIDATE, _job(tmp_path, TYPES_HARNESS, candidate_process),
                 LIMITS)
    assert result.ok, result
    out = result.output
    assert out["array"] == ["int32", [2, 3], [[99, 2, 3], [4, 5, 6]]]
    sent = [type(np.float32(1.5)).__name__, type(np.bool_(True)).__name__]
    # numpy scalars cross as Python numbers; imported, the candidate hands over its own
    assert out["types"][:2] == (["float", "bool"] if candidate_process else sent)
    assert out["types"][2] == "[1, (2, 3)]"
    assert out["caught"] == "KeyError k" and out["missing"] is True
    assert out["module"] == "module"


def test_the_candidate_cpu_time_counts(sandbox, tmp_path):
    harness = "def run(candidate, instances):\n    return [candidate.f(x) for x in instances]\n"
    spin = ("import time\n"
            "def f(x):\n"
            "    end = time.process_time() + 0.2\n"
            "    while time.process_time() < end:\n"
            "        pass\n"
            "    return x\n")
    result = run(sandbox, spin, _job(tmp_path, harness), LIMITS)
    assert result.ok and result.output == [1, 2, 3], result
    assert result.cpu_s >= 0.55


@pytest.mark.parametrize(("payload", "says"), [
    (b"\x05\x00\x00\x00Rzzzz", "malformed reply"),  # an unknown tag
    (b"\xff\xff\xff\x7fR", "limit"),  # a 2 GiB message
    (b"\x0a\x00\x00\x00Ra\x03<O8\x01\x01\x00\x00", "malformed reply"),  # an object array
])
def test_a_forged_reply_only_crashes_its_own_evaluation(sandbox, tmp_path, payload, says):
    harness = "def run(candidate, instances):\n    return [candidate.f(x) for x in instances]\n"
    job = _job(tmp_path, harness)
    result = run(sandbox, FORGE_REPLY.replace("PAYLOAD", repr(payload)), job, LIMITS)
    assert result.error is ErrorKind.CRASH, result
    assert says in result.message and "ChannelBroken" in result.message, result.message
    good = run(sandbox, "def f(x):\n    return x * 2\n", job, LIMITS)
    assert good.ok and good.output == [2, 4, 6], good


def test_the_candidate_message_names_its_own_line(sandbox, tmp_path):
    harness = "def run(candidate, instances):\n    return [candidate.f(x) for x in instances]\n"
    code = "import numpy as np\n\ndef f(x):\n    raise ValueError('boom')\n"
    result = run(sandbox, code, _job(tmp_path, harness), LIMITS)
    assert result.error is ErrorKind.CRASH
    assert result.message == "ValueError: boom (at candidate.py:4 in f)"
    assert 'candidate.py", line 4, in f' in result.stderr_tail


# ------------------------------------------------------------------- the codec


@pytest.fixture(scope="module")
def codec() -> Any:
    folder = str(resource_dir("sandbox"))
    if folder not in sys.path:
        sys.path.append(folder)
    return importlib.import_module("runner_codec")


def test_plain_values_and_numeric_arrays_round_trip(codec):
    value = [None, True, False, -7, 2 ** 70, -(2 ** 70), 0.5, float("inf"), "é", (1, [2.5]),
             {"a": np.int64(3), 4: np.float32(0.25), (1, 2): "t"},
             np.arange(6, dtype=np.uint16).reshape(2, 3), np.zeros((4, 4))[:, 1],
             np.array(True), np.zeros((0, 3), dtype=np.int8)]
    back = codec.decode(codec.encode(value))
    assert back[:10] == [None, True, False, -7, 2 ** 70, -(2 ** 70), 0.5, float("inf"), "é",
                         (1, [2.5])]
    assert back[10] == {"a": 3, 4: 0.25, (1, 2): "t"} and type(back[10]["a"]) is int
    for sent, got in zip(value[11:], back[11:], strict=True):
        assert got.dtype == sent.dtype and got.shape == sent.shape
        assert np.array_equal(got, sent) and got.flags.writeable and got.flags.c_contiguous
    nan = codec.decode(codec.encode(float("nan")))
    assert nan != nan


@pytest.mark.parametrize("value", [object(), {1, 2}, b"bytes", 1j, np.array(["a"]),
                                   np.array([1j]), np.array([object()]), np.complex64(1)])
def test_anything_else_cannot_be_sent(codec, value):
    with pytest.raises(codec.CodecError):
        codec.encode(value)


def test_nesting_is_bounded(codec):
    deep: list = []
    for _ in range(codec.MAX_DEPTH + 1):
        deep = [deep]
    with pytest.raises(codec.CodecError, match="nested"):
        codec.encode(deep)
    data = b"l\x01\x00\x00\x00" * (codec.MAX_DEPTH + 1) + b"N"
    with pytest.raises(codec.CodecError, match="nested"):
        codec.decode(data)


@pytest.mark.parametrize("data", [
    b"", b"x", b"f\x00", b"N\x00",  # unknown tag, short, trailing bytes
    b"l\xff\xff\xff\xff", b"s\x10\x00\x00\x00ab",  # counts and lengths past the end
    b"a\x03<c8\x01\x01\x00\x00\x00\x00\x00\x00\x00" + bytes(8),  # complex
    b"a\x03|O8\x00",  # object
    b"a\x09<V8[('x'\x00",  # structured or nonsense dtype text
    b"a\x03<f8\x01" + (1 << 40).to_bytes(8, "little"),  # more data than sent
    b"a\x03<f8\x41" + bytes(8),  # too many dimensions
    b"d\x01\x00\x00\x00l\x00\x00\x00\x00N",  # an unhashable key
    b"I\x03\x00\x00\x001e5",  # a big int that is not digits
    b"s\x01\x00\x00\x00\xff",  # not UTF-8
])
def test_malformed_bytes_are_rejected(codec, data):
    with pytest.raises(codec.CodecError):
        codec.decode(data)


def test_ready_message_and_errors_are_checked(codec):
    channel = importlib.import_module("runner_channel")
    assert channel.read_ready(bytes(channel.ready_message(["priority"]))) == ["priority"]
    failed = bytes(channel.failed_message("memory", "MemoryError while importing"))
    assert channel.read_ready(failed) == ("memory", "MemoryError while importing")
    odd = bytes(channel.failed_message("rm -rf", "x"))
    assert channel.read_ready(odd) == ("crash", "x")  # only the kinds an import can have
    with pytest.raises(channel.ChannelBroken):
        channel.read_ready(b"\x00\x00\x00\x00Y" + codec.encode([1, 2]))
    exc = channel.remote_exception(("error", "open", ("x",), "d", "t"))  # not an exception
    assert type(exc) is channel.CandidateError and exc.evo_description == "d"
    assert type(channel.remote_exception(("error", "ValueError", ("v",), "d", "t"))) is ValueError
    assert isinstance(channel.remote_exception(("?",)), channel.ChannelBroken)
    assert json.dumps(channel.describe(exc)) == '"d"'


def test_feedback_does_not_carry_the_random_work_folder() -> None:
    """The same program must get the same feedback every time (prompts are built from
    it, and exact replay compares prompts)."""
    from evoengine.config.compose import load_run_config
    from evoengine.controller.setup import limits_for
    from evoengine.evaluation.evaluator import Evaluator
    from evoengine.evaluation.problem import Problem

    config, _ = load_run_config(["problem=bin_packing_quick"])
    problem = Problem(config.problem)
    code = problem.initial_code.replace(
        "    return -(bins - item)",
        "    import warnings\n    warnings.warn('look here')\n    return -(bins - item)")
    sandbox = ProcessSandbox(pool_size=1)
    try:
        evaluator = Evaluator(problem, sandbox, limits_for(config))
        first, second = (asyncio.run(evaluator.evaluate(code)) for _ in range(2))
    finally:
        sandbox.shutdown()
    assert first.valid and "look here" in first.feedback
    assert "<sandbox>" in first.feedback and "evo-runner" not in first.feedback
    assert first.feedback == second.feedback
