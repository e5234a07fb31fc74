"""evoengine against OpenEvolve on one workload: throughput and the engine's own CPU.

Both engines talk to the same scripted OpenAI-protocol server (evoengine's
``ScriptedServer``, in this process), which answers every request at once with a
distinct, valid SEARCH/REPLACE diff of the bin-packing ``priority`` function, and both
score children with the same code: ``problems/bin_packing/harness.py`` + ``score.py`` on
the ``bin_packing_quick`` train instances (2 x 500 items). OpenEvolve is installed
from PyPI into ``benchmarks/.venv-openevolve`` and used only as the opponent.

Each engine runs as a child process, twice per repeat:

* ``real``: the real evaluation. Gives wall time and evaluations per second.
* ``trivial``: the evaluation loads the candidate module and returns a constant
  score, so nearly all CPU left is the engine's own. Engine CPU per evaluation =
  CPU time of the engine's whole process tree / evaluations. This process is a child
  subreaper, so every descendant (workers, sandbox runners, forked candidates) is
  reaped here or by its parent and its CPU lands in getrusage(RUSAGE_CHILDREN).

Also recorded: the main process's own CPU (read from /proc as a zombie), the time and
tree CPU (live processes from /proc) at the first and at the last LLM request, which
give a steady rate and CPU per evaluation without start-up and shutdown, and the CPU
of one evaluation run alone in this process.

    python benchmarks/vs_openevolve.py [--iterations 200] [--concurrency 8] [--repeats 1]
"""

from __future__ import annotations

import argparse
import ctypes
import itertools
import json
import os
import platform
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from proc_cpu import proc_cpu, tree_cpu  # noqa: E402  (benchmarks/proc_cpu.py)

from evoengine.config.compose import load_run_config  # noqa: E402
from evoengine.evaluation.problem import Problem, import_file  # noqa: E402
from evoengine.llm.scripted_server import ScriptedServer  # noqa: E402

OPENEVOLVE_VERSION = "0.4.0"  # the latest on PyPI when this was written
VENV = REPO / "benchmarks" / ".venv-openevolve"
BIN_PACKING = REPO / "problems" / "bin_packing"
NO_HOLDOUT = ["~problem.splits.validation", "~problem.splits.test"]  # no end-of-run check

EVALUATOR = '''"""OpenEvolve evaluator: the bin_packing harness + scorer, in-process (generated)."""
import importlib.util, json, sys, uuid
from pathlib import Path

sys.path.insert(0, {repo!r})  # score.py imports evoengine.evaluation.scoring (stdlib only)
TRIVIAL = {trivial!r}


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


harness = _load("bench_bp_harness", {harness!r})
scorer = _load("bench_bp_score", {score!r})
INSTANCES = json.loads((Path(__file__).parent / "instances.json").read_text())


def evaluate(program_path):
    candidate = _load(f"candidate_{{uuid.uuid4().hex}}", program_path)
    if TRIVIAL:
        return {{"combined_score": -4.0}}
    try:
        result = scorer.score(harness.run(candidate, INSTANCES), INSTANCES)
    except Exception as exc:  # an invalid child: scored, not retried
        return {{"combined_score": -100.0, "error": str(exc)[:200]}}
    return {{"combined_score": float(result.score), **result.metrics}}
'''

TRIVIAL_HARNESS = '''"""Benchmark harness that does no work (generated); the candidate is loaded."""


def run(candidate, instances):
    return []
'''

TRIVIAL_SCORE = '''"""Benchmark scorer that does no work (generated)."""
from evoengine.evaluation.scoring import ScoreResult


def load_instances(split, spec, data_dir):
    return [None]  # one instance, which the harness ignores (a split may not be empty)


def score(outputs, instances):
    return ScoreResult(score=-4.0, features={"bin_fill_std": 0.05})
'''


def diff_reply(k: int) -> str:
    """A distinct valid edit: one more line that shrinks large bins, with a new factor."""
    factor = 0.001 * (k % 10) + 1e-7 * k
    return ("Shrink the large bins a little before best fit.\n<<<<<<< SEARCH\n"
            "    return -(bins - item)\n=======\n"
            f"    bins = bins - {factor:.7f} * bins ** 2\n    return -(bins - item)\n"
            ">>>>>>> REPLACE\n")


class Script:
    """The server's script: replies with a fresh diff; notes the time and the engine's
    process-tree CPU at the first and at the ``last``-th request (the steady part)."""

    def __init__(self) -> None:
        self.reset(0, 0)

    def reset(self, root: int, last: int) -> None:
        self.root, self.last = root, last
        self.counter = itertools.count(1)
        self.marks: dict[int, tuple[float, float]] = {}

    def __call__(self, request: dict) -> str:
        k = next(self.counter)
        if k in (1, self.last):
            self.marks[k] = (time.perf_counter(), tree_cpu(self.root))
        return diff_reply(k)


def ensure_venv(version: str) -> str:
    """Create (or reuse) the OpenEvolve venv; return the installed version."""
    python = VENV / "bin" / "python"
    probe = [str(python), "-c", "import openevolve; print(openevolve.__version__)"]
    if python.exists():
        found = subprocess.run(probe, capture_output=True, text=True)
        if found.returncode == 0 and found.stdout.strip() == version:
            return version
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", f"openevolve=={version}"],
                   check=True)
    return subprocess.run(probe, capture_output=True, text=True, check=True).stdout.strip()


def prepare(work: Path, iterations: int, concurrency: int, base_url: str) -> None:
    """Write OpenEvolve's problem folders and evoengine's trivial problem under ``work``."""
    config, _ = load_run_config(["problem=bin_packing_quick", *NO_HOLDOUT])
    problem = Problem(config.problem)
    train = problem.instances("train")
    for mode in ("real", "trivial"):
        folder = work / f"openevolve_{mode}"
        folder.mkdir()
        (folder / "instances.json").write_text(json.dumps(train))
        shutil.copy(BIN_PACKING / "initial.py", folder / "initial_program.py")
        (folder / "evaluator.py").write_text(EVALUATOR.format(
            repo=str(REPO), trivial=mode == "trivial", harness=str(BIN_PACKING / "harness.py"),
            score=str(BIN_PACKING / "score.py")))
        (folder / "config.yaml").write_text(json.dumps({  # JSON is YAML
            "max_iterations": iterations,
            "random_seed": 42, "language": "python", "diff_based_evolution": True,
            "llm": {"api_base": base_url, "api_key": "scripted", "timeout": 60,
                    "retries": 3, "retry_delay": 1,
                    "models": [{"name": "scripted-model", "weight": 1.0}]},
            "database": {"num_islands": 4},
            "evaluator": {"parallel_evaluations": concurrency, "cascade_evaluation": False,
                          "use_llm_feedback": False, "enable_artifacts": False,
                          "timeout": 60}}, indent=2))
    trivial = work / "bin_packing_trivial"
    trivial.mkdir()
    shutil.copy(BIN_PACKING / "initial.py", trivial / "initial.py")
    (trivial / "harness.py").write_text(TRIVIAL_HARNESS)
    (trivial / "score.py").write_text(TRIVIAL_SCORE)
    yaml = {"name": "bin_packing_trivial", "entry": "priority",
            "description": config.problem.description,
            "splits": {"train": {"spec": {}}}, "timeout_s": 30.0, "cpu_s": 30,
            "memory_mb": 2048, "preload": ["numpy"],
            "features": [{"name": "bin_fill_std", "min": 0.02, "max": 0.14, "bins": 12}]}
    (trivial / "problem.yaml").write_text(json.dumps(yaml, indent=2))


def command(engine: str, mode: str, work: Path, run: str, args: argparse.Namespace,
            base_url: str) -> list[str]:
    iterations, concurrency = args.iterations, args.concurrency
    if engine == "openevolve":
        folder = work / f"openevolve_{mode}"
        return [str(VENV / "bin" / "python"), "-m", "openevolve.cli",
                str(folder / "initial_program.py"), str(folder / "evaluator.py"),
                "--config", str(folder / "config.yaml"), "--output", str(work / run),
                "--iterations", str(iterations)]
    problem = ["problem=bin_packing_quick", *NO_HOLDOUT] if mode == "real" else \
        [f"problem={work / 'bin_packing_trivial'}"]  # a train split only
    return [sys.executable, "-m", "evoengine.cli", "run", *problem,
            "llm=openai", f"llm.base_url={base_url}", "llm.model=scripted-model",
            "ui=plain", "sandbox=process", f"sandbox.pool_size={args.pool_size}",
            f"search.llm_concurrency={concurrency}", f"search.eval_concurrency={concurrency}",
            f"search.max_evaluations={iterations + 1}",  # + the seed, as OpenEvolve does
            "llm.edit_probabilities.diff=1", "llm.edit_probabilities.full=0",
            "llm.edit_probabilities.crossover=0", f"name={run}", f"runs_dir={work}",
            f"problem.candidate_process={args.candidate_process}"]


def count_evaluations(engine: str, work: Path, run: str) -> int:
    """Programs evaluated, the seed included, read from the engine's own output."""
    if engine == "openevolve":  # its database may drop programs; its log does not
        return (work / f"{run}.log").read_text().count("Evaluated program ")
    with sqlite3.connect(work / run / "archive.db") as conn:  # copies are not evaluated
        return conn.execute("SELECT COUNT(*) FROM evaluations WHERE split = 'train'"
                            ).fetchone()[0]


def _reap_orphans(deadline_s: float = 5.0) -> bool:
    """Reap descendants re-parented to this subreaper; True if some outlived the wait."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            time.sleep(0.05)
    return True


def measure(engine: str, mode: str, work: Path, repeat: int, script: Script,
            args: argparse.Namespace, base_url: str) -> dict:
    run = f"{engine}-{mode}-{repeat}"
    cmd = command(engine, mode, work, run, args, base_url)
    env = dict(os.environ, OPENAI_API_KEY="scripted", PYTHONPATH=str(REPO))
    log = open(work / f"{run}.log", "w")  # noqa: SIM115 (closed below)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    script.reset(proc.pid, args.iterations)
    main_cpu = 0.0
    while True:  # read the main process's own CPU as a zombie, just before reaping it
        state, main_cpu = proc_cpu(proc.pid)
        if state == "Z":
            break
        time.sleep(0.02)
    wall = time.perf_counter() - started
    returncode = proc.wait()
    left_running = _reap_orphans()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    log.close()
    if returncode != 0:
        raise SystemExit(f"{run} failed ({returncode}); see {work / run}.log:\n"
                         + (work / f"{run}.log").read_text()[-3000:])
    tree = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    evaluations = count_evaluations(engine, work, run)
    (t1, cpu1), (tn, cpun) = script.marks[1], script.marks[args.iterations]
    return {"engine": engine, "mode": mode, "repeat": repeat, "wall_s": wall,
            "evaluations": evaluations, "llm_requests": next(script.counter) - 1,
            "evals_per_s": evaluations / wall,
            "first_request_s": t1 - started, "cpu_at_first_request_s": cpu1,
            "steady_requests_per_s": (args.iterations - 1) / (tn - t1),
            "steady_cpu_ms_per_request": 1000 * (cpun - cpu1) / (args.iterations - 1),
            "tree_cpu_s": tree, "main_cpu_s": main_cpu,
            "tree_cpu_ms_per_eval": 1000 * tree / evaluations,
            "main_cpu_ms_per_eval": 1000 * main_cpu / evaluations,
            "unreaped_descendants": left_running, "command": cmd}


def eval_cpu_ms(repeats: int = 20) -> float:
    """CPU of one real evaluation (pack + score the train instances), in this process."""
    config, _ = load_run_config(["problem=bin_packing_quick", *NO_HOLDOUT])
    instances = Problem(config.problem).instances("train")
    harness = import_file(BIN_PACKING / "harness.py", "bench_bp_harness")
    scorer = import_file(BIN_PACKING / "score.py", "bench_bp_score")
    seed = import_file(BIN_PACKING / "initial.py", "bench_bp_seed")
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        scorer.score(harness.run(seed, instances), instances)
        times.append(time.process_time() - t0)
    return 1000 * statistics.median(times)


# (label, mode, run key, higher is better)
ROWS = [("evaluations per second (real eval)", "real", "evals_per_s", True),
        ("engine CPU ms per evaluation (trivial eval)", "trivial", "tree_cpu_ms_per_eval",
         False),
        ("steady evaluations per second (real eval)", "real", "steady_requests_per_s", True),
        ("steady engine CPU ms per eval (trivial eval)", "trivial",
         "steady_cpu_ms_per_request", False),
        ("start-up: s to first LLM request (real)", "real", "first_request_s", False),
        ("start-up: CPU s to first request (real)", "real", "cpu_at_first_request_s", False),
        ("all CPU ms per evaluation (real eval)", "real", "tree_cpu_ms_per_eval", False)]


def summarise(runs: list[dict], mode: str, key: str, rate: bool) -> dict:
    """Medians per engine; evoengine's advantage (>1: better) of the medians and per run."""
    values = {engine: [r[key] for r in runs if (r["engine"], r["mode"]) == (engine, mode)]
              for engine in ("evoengine", "openevolve")}
    advantage = (lambda e, o: e / o) if rate else (lambda e, o: o / e)
    evo, oe = statistics.median(values["evoengine"]), statistics.median(values["openevolve"])
    return {"evoengine": evo, "openevolve": oe, "ratio": advantage(evo, oe),
            "ratios": [advantage(e, o) for e, o in zip(values["evoengine"],
                                                       values["openevolve"], strict=True)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--pool-size", type=int, default=None,
                        help="evoengine's sandbox.pool_size (default: --concurrency)")
    parser.add_argument("--candidate-process", choices=("true", "false"), default="true",
                        help="evoengine's problem.candidate_process (default true: the "
                             "candidate in a process of its own, called over a pipe; false: "
                             "imported into the harness, as OpenEvolve's evaluator does)")
    parser.add_argument("--openevolve-version", default=OPENEVOLVE_VERSION)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--keep", action="store_true", help="keep the runs' folders and logs")
    args = parser.parse_args()
    args.pool_size = args.pool_size or args.concurrency
    version = ensure_venv(args.openevolve_version)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: orphans come back to us
    one_eval_ms = eval_cpu_ms()
    runs = []
    script = Script()
    work = Path(tempfile.mkdtemp(prefix="vs-openevolve-"))
    print(f"work folder: {work}")
    with ScriptedServer(script) as server:
        prepare(work, args.iterations, args.concurrency, server.base_url)
        for repeat in range(args.repeats):
            for mode in ("real", "trivial"):
                for engine in ("evoengine", "openevolve"):
                    result = measure(engine, mode, work, repeat, script, args, server.base_url)
                    runs.append(result)
                    print(f"[{repeat}] {engine:>10} {mode:>7}: {result['evaluations']} evals "
                          f"in {result['wall_s']:.1f} s = {result['evals_per_s']:.2f} eval/s; "
                          f"tree CPU {result['tree_cpu_ms_per_eval']:.1f} ms/eval, main "
                          f"process {result['main_cpu_ms_per_eval']:.1f} ms/eval", flush=True)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)

    summary = {label: summarise(runs, mode, key, rate) for label, mode, key, rate in ROWS}
    print(f"\none evaluation alone (pack + score, in this process): {one_eval_ms:.1f} ms CPU")
    print(f"medians of {args.repeats} run(s); ratio = evoengine's advantage of the medians "
          "(>1: evoengine better); the first run's own ratio in brackets")
    print(f"{'':>44} {'evoengine':>10} {'OpenEvolve':>10} {'ratio':>7}")
    for label, row in summary.items():
        print(f"{label:>44} {row['evoengine']:>10.2f} {row['openevolve']:>10.2f} "
              f"{row['ratio']:>6.2f}x ({row['ratios'][0]:.2f}x)")
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"],  # read-only
                            capture_output=True, text=True).stdout.strip() or "unknown"
    machine = {"python": platform.python_version(), "machine": platform.machine(),
               "processor": platform.processor(), "cpus": os.cpu_count()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vs_openevolve.json").write_text(json.dumps(
        {"machine": machine, "openevolve_version": version, "evoengine_commit": commit,
         "iterations": args.iterations, "concurrency": args.concurrency,
         "pool_size": args.pool_size, "repeats": args.repeats,
         "candidate_process": args.candidate_process,
         "one_eval_cpu_ms": one_eval_ms, "summary": summary,
         "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
