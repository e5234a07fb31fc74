"""What `search.deterministic=true` costs in throughput.

Runs `evo run problem=bin_packing_quick llm=openai` against the scripted
OpenAI-protocol server (evoengine.llm.scripted_server, standing in for a model) with
and without `search.deterministic`, at 8 concurrent model requests. Each reply is a
valid full rewrite with a constant of its own (no duplicates), sent after a latency
drawn from a log-normal distribution (median ``--latency`` seconds, a few times that
at the tail), so that replies come back out of order as a real model's do. Reports
evaluations per second (wall clock, start-up included) per mode, medians of
``--repeats`` runs, and their ratio.

    python benchmarks/deterministic_cost.py --evaluations 150 --repeats 3
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from evoengine.llm.scripted_server import ScriptedServer


def _script(latency: float, seed: int):
    rng = random.Random(seed)
    counter = itertools.count(1)

    def answer(request: dict) -> dict:
        k = next(counter)
        text = ("```python\n# EVOLVE-BLOCK-START\ndef priority(item, bins):\n"
                f"    return -(bins - item) * {1 + k / 100000:.6f}\n# EVOLVE-BLOCK-END\n```")
        return {"reply": text, "delay": latency * rng.lognormvariate(0.0, 0.75)}

    return answer


def _run(work: Path, name: str, deterministic: bool, args: argparse.Namespace,
         repeat: int) -> float:
    """One run; its evaluations per second, from start to exit."""
    with ScriptedServer(_script(args.latency, repeat)) as server:
        start = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "evoengine.cli", "run", "problem=bin_packing_quick",
             "llm=openai", f"llm.base_url={server.base_url}", "ui=plain", "sandbox=process",
             "llm.edit_probabilities={diff: 0, full: 1, crossover: 0}",
             f"search.llm_concurrency={args.concurrency}", "search.eval_concurrency=2",
             f"search.deterministic={str(deterministic).lower()}",
             f"search.max_evaluations={args.evaluations}", "search.validate_top=0",
             f"name={name}", "seed=1"],
            cwd=work, capture_output=True, text=True, timeout=1200)
        elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{name} failed:\n{result.stderr[-2000:]}")
    return args.evaluations / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluations", type=int, default=150)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--latency", type=float, default=0.3,
                        help="median model latency in seconds")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "deterministic_cost.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="evo-det-"))
    rates: dict[str, list[float]] = {"free": [], "deterministic": []}
    try:
        for repeat in range(args.repeats):  # alternate, so drifts in load hit both
            for mode in rates:
                rate = _run(work, f"{mode}-{repeat}", mode == "deterministic", args, repeat)
                rates[mode].append(rate)
                print(f"{mode:13s} run {repeat + 1}: {rate:.1f} evaluations/s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    medians = {mode: statistics.median(values) for mode, values in rates.items()}
    ratio = medians["deterministic"] / medians["free"]
    print(f"median evaluations/s: free {medians['free']:.1f}, deterministic "
          f"{medians['deterministic']:.1f} ({ratio:.2f}x)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "machine": platform.platform(), "python": platform.python_version(),
        "evaluations": args.evaluations, "concurrency": args.concurrency,
        "latency_median_s": args.latency, "rates": rates, "medians": medians,
        "ratio": ratio}, indent=2) + "\n")


if __name__ == "__main__":
    main()
