"""tsp_gls: the guided local search is correct and deterministic, and the host rejects
any matrix or tour that is not what the contract says.

The harness and scorer are loaded straight from the problem folder for the search and
validator checks; the evaluator and a short `evo run` go through the real process
sandbox (where ``heuristics`` runs in a process of its own).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import math
import types
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from evoengine.config.schema import ProblemConfig
from evoengine.evaluation.scoring import InvalidOutput
from tests.conftest import archive_rows, load_problem_file

PROBLEM_DIR = Path(__file__).resolve().parents[1] / "problems" / "tsp_gls"
DATA_DIR = PROBLEM_DIR / "data"




harness = load_problem_file("tsp_gls", "harness")
scorer = load_problem_file("tsp_gls", "score")
seed = load_problem_file("tsp_gls", "initial")  # classic GLS: badness = distance
CONFIG = OmegaConf.merge(OmegaConf.structured(ProblemConfig),
                         OmegaConf.load(PROBLEM_DIR / "problem.yaml"))


def _instances(split: str) -> list[dict]:
    return scorer.load_instances(split, OmegaConf.to_container(CONFIG.splits[split].spec),
                                 DATA_DIR)


def _candidate(fn) -> types.ModuleType:
    module = types.ModuleType("candidate")
    module.heuristics = fn  # type: ignore[attr-defined]
    return module


# --- the search ----------------------------------------------------------------------

def _all_moves(tour: np.ndarray):
    n = len(tour)
    for i, j in itertools.combinations(range(n), 2):
        if j >= i + 2 and not (i == 0 and j == n - 1):
            moved = tour.copy()
            moved[i + 1:j + 1] = moved[i + 1:j + 1][::-1]
            yield moved
    for i, j in itertools.product(range(n), repeat=2):
        if j != i and j != (i - 1) % n:
            rest = np.delete(tour, i)
            at = int(np.flatnonzero(rest == tour[j])[0]) + 1
            yield np.insert(rest, at, tour[i])


@pytest.mark.parametrize("n", [5, 6, 9])
def test_best_move_is_the_best_2opt_or_relocate_by_brute_force(n: int) -> None:
    rng = np.random.default_rng(n)
    moves = harness.Neighbourhoods(n)
    for _ in range(5):
        cost = rng.random((n, n))
        cost = cost + cost.T
        tour = rng.permutation(n)
        before = harness.tour_cost(cost, tour)
        best = min(harness.tour_cost(cost, moved) - before for moved in _all_moves(tour))
        delta, _, _, _ = moves.best_move(cost, tour)
        assert delta == pytest.approx(best)
        after = moves.descend(cost, tour, max_moves=1)
        if best < 0:
            assert harness.tour_cost(cost, after) == pytest.approx(before + best)


def test_gls_is_deterministic_and_returns_a_tour_no_worse_than_its_start() -> None:
    inst = _instances("train")[-1]  # n = 200
    distances = harness.distance_matrix(inst["coords"])
    first = harness.guided_local_search(distances, distances, 30, 0.3, 1000)
    again = harness.guided_local_search(distances, distances, 30, 0.3, 1000)
    assert first.tolist() == again.tolist()
    assert sorted(first.tolist()) == list(range(200))
    local_optimum = harness.guided_local_search(distances, distances, 0, 0.3, 1000)
    start = harness.nearest_neighbour(distances)
    assert (harness.tour_cost(distances, first) <= harness.tour_cost(distances, local_optimum)
            < harness.tour_cost(distances, start))


def test_the_matrix_steers_the_search() -> None:
    """Different badness matrices give different tours under the same budget."""
    inst = _instances("train")[-1]
    distances = harness.distance_matrix(inst["coords"])
    rng = np.random.default_rng(0)
    noise = rng.random(distances.shape)
    classic = harness.guided_local_search(distances, distances, 50, 0.3, 1000)
    random = harness.guided_local_search(distances, noise, 50, 0.3, 1000)
    assert classic.tolist() != random.tolist()


@pytest.mark.slow
@pytest.mark.parametrize("split, low, high", [
    ("train", 0.3, 1.5),        # measured 0.73 %
    ("validation", 0.5, 2.5),   # measured 1.31 %
    ("test", 0.5, 2.5),         # measured 1.34 % on 11 TSPLIB instances
])
def test_classic_gls_seed_lands_near_optimal(split: str, low: float, high: float) -> None:
    instances = _instances(split)
    result = scorer.score(harness.run(seed, instances), instances)
    assert low <= result.metrics["gap_pct"] <= high
    assert result.features["distance_correlation"] == pytest.approx(1.0)
    assert result.score == pytest.approx(-result.metrics["gap_pct"])


def test_splits_and_budget_come_from_problem_yaml() -> None:
    train = _instances("train")
    assert sorted({len(i["coords"]) for i in train}) == [20, 50, 100, 200] and len(train) == 16
    assert all(i["gls"] == {"iterations": 200, "alpha": 0.3, "max_moves": 1000} for i in train)
    test = _instances("test")
    assert len(test) == 11 and max(len(i["coords"]) for i in test) == 299
    with pytest.raises(ValueError, match="spec.gls lacks iterations"):
        scorer.load_instances("train", {"kind": "uniform", "file": "uniform_train.json",
                                        "gls": {"alpha": 0.3, "max_moves": 10}}, DATA_DIR)


# --- the validator -------------------------------------------------------------------

SQUARE = {"name": "square", "group": "g", "coords": [[0, 0], [0, 3], [4, 3], [4, 0]],
          "optimum": 14, "gls": {"iterations": 5, "alpha": 0.3, "max_moves": 100}}
GOOD_TOUR = [0, 1, 2, 3]


def _encoded(matrix) -> dict:
    array = np.asarray(matrix)
    return {"shape": list(array.shape), "dtype": array.dtype.str,
            "data": base64.b64encode(array.astype("<f8").tobytes()).decode()}


def _output(matrix=None, tour=GOOD_TOUR, **extra) -> list:
    matrix = np.ones((4, 4)) if matrix is None else matrix
    return [{"tour": tour, "heuristics": _encoded(matrix), **extra}]


def test_valid_output_scores_the_tour_and_the_correlation() -> None:
    distances = harness.distance_matrix(SQUARE["coords"])
    result = scorer.score(_output(distances), [SQUARE])
    assert result.score == 0.0
    assert result.features["distance_correlation"] == pytest.approx(1.0)
    assert scorer.score(_output(-distances), [SQUARE]).features[
        "distance_correlation"] == pytest.approx(-1.0)
    assert scorer.score(_output(np.zeros((4, 4), dtype=int)), [SQUARE]).features[
        "distance_correlation"] == 0.0


def _with(**changes) -> list:
    out = _output()
    out[0]["heuristics"].update(changes)
    return out


NAN = np.ones((4, 4))
NAN[1, 2] = np.nan
INF = np.ones((4, 4))
INF[3, 0] = -np.inf


@pytest.mark.parametrize("outputs", [
    _output(NAN),
    _output(INF),
    _output(np.ones((4, 3))),
    _output(np.ones((5, 5))),
    _output(np.ones(16)),
    _with(dtype="<U1"),
    _with(dtype="|b1"),
    _with(dtype="not a dtype"),
    _with(dtype="<c16"),
    _with(data="%%%not base64"),
    _with(data=base64.b64encode(b"\0" * 8).decode()),
    _with(data=None),
    _with(shape=None),
    [{"tour": GOOD_TOUR, "heuristics": [[1.0] * 4] * 4}],
    _output(tour=None),
    _output(tour=[0, 1, 2, 2]),
    _output(tour=[0, 1, 2]),
    _output(tour=[0, 1, 2, math.nan]),
    _output(extra_key=1),
    [{"tour": GOOD_TOUR}],
    [GOOD_TOUR],
    [],
    None,
], ids=["nan", "inf", "wrong-columns", "too-big", "flat", "strings", "bools", "bad-dtype",
        "complex", "bad-base64", "short-data", "no-data", "no-shape", "plain-list",
        "no-tour", "repeated-node", "short-tour", "nan-node", "extra-key", "no-heuristics",
        "bare-tour", "no-results", "none"])
def test_malformed_output_is_invalid(outputs: object) -> None:
    with pytest.raises(InvalidOutput) as info:
        scorer.score(outputs, [SQUARE])
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("value, says", [
    (np.full((4, 4), np.nan), "every entry must be finite"),
    (np.ones((3, 3)), "must be (4, 4)"),
    (np.array([["a"] * 4] * 4), "must hold real numbers"),
    ([[1, 2], [3]], "must be (4, 4)"),
    (None, "must be (4, 4)"),
])
def test_harness_passes_bad_matrices_to_the_host_without_searching(value, says) -> None:
    outputs = harness.run(_candidate(lambda d: value), [SQUARE])
    assert outputs[0]["tour"] is None
    json.dumps(outputs)  # what the sandbox sends back must be JSON
    with pytest.raises(InvalidOutput, match=says.replace("(", r"\(").replace(")", r"\)")):
        scorer.score(outputs, [SQUARE])


def test_harness_accepts_int_matrices_and_gives_the_candidate_a_copy() -> None:
    def vandal(distances):
        result = distances.astype(int)
        distances[:] = 0  # must not reach the search
        return result

    outputs = harness.run(_candidate(vandal), [SQUARE])
    assert scorer.score(outputs, [SQUARE]).score == 0.0


# --- through the real process sandbox ------------------------------------------------

def test_evaluator_scores_the_seed_and_rejects_nan_through_the_sandbox() -> None:
    from evoengine.config.compose import load_run_config
    from evoengine.controller.setup import limits_for
    from evoengine.evaluation.evaluator import Evaluator
    from evoengine.evaluation.problem import Problem
    from evoengine.evaluation.sandbox.process import ProcessSandbox

    initial = (PROBLEM_DIR / "initial.py").read_text()
    nan = initial.replace("return distance_matrix.copy()",
                          "return distance_matrix / (distance_matrix - distance_matrix)")
    config, _ = load_run_config(["problem=tsp_gls", "sandbox=process"])
    sandbox = ProcessSandbox(pool_size=1)
    try:
        evaluator = Evaluator(Problem(config.problem), sandbox, limits_for(config))
        good, bad = (asyncio.run(evaluator.evaluate(code)) for code in (initial, nan))
    finally:
        sandbox.shutdown()
    instances = _instances("train")
    direct = scorer.score(harness.run(seed, instances), instances)
    assert good.valid and good.score == pytest.approx(direct.score)
    assert not bad.valid and bad.error == "invalid_output"
    assert "must be finite" in bad.feedback


@pytest.mark.slow
def test_evo_run_on_tsp_gls_keeps_valid_programs(run_evo, tmp_path: Path) -> None:
    result = run_evo("run", "problem=tsp_gls", "llm=gp", "search.max_evaluations=6",
                     "sandbox=process", "ui=plain", "name=gls", "search.num_islands=2")
    assert result.returncode == 0, result.stderr
    db = tmp_path / "runs" / "gls" / "archive.db"
    valid = archive_rows(db, "SELECT score, features FROM programs WHERE valid")
    assert valid and all(math.isfinite(score) and score <= 0 for score, _ in valid)
    assert all("distance_correlation" in json.loads(f) for _, f in valid)
    assert archive_rows(db, "SELECT COUNT(*) FROM evaluations WHERE split='train'")[0][0] == 6
    assert (tmp_path / "runs" / "gls" / "best_program.py").is_file()
