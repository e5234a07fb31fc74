"""tsp: the constructive TSP problem measures tours like TSPLIB and rejects anything
that is not a tour.

The harness and scorer are loaded straight from the problem folder for the baseline
and validator checks; the evaluator and a short `evo run` go through the real process
sandbox. Nearest neighbour must land where it is known to land (about 25 % above
optimal on TSPLIB, 16-25 % on uniform instances of 20-200 cities): if it did not,
distances, optima or the tour loop would differ from the literature's and evolved
gaps could not be compared with published ones.
"""

from __future__ import annotations

import asyncio
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

PROBLEM_DIR = Path(__file__).resolve().parents[1] / "problems" / "tsp"
DATA_DIR = PROBLEM_DIR / "data"




harness = load_problem_file("tsp", "harness")
scorer = load_problem_file("tsp", "score")
seed = load_problem_file("tsp", "initial")  # nearest neighbour, with its actual code
CONFIG = OmegaConf.merge(OmegaConf.structured(ProblemConfig),
                         OmegaConf.load(PROBLEM_DIR / "problem.yaml"))


def _instances(split: str) -> list[dict]:
    return scorer.load_instances(split, OmegaConf.to_container(CONFIG.splits[split].spec),
                                 DATA_DIR)


def _evaluate(candidate: types.ModuleType, instances: list[dict]):
    return scorer.score(harness.run(candidate, instances), instances)


# --- the data and the published baselines --------------------------------------------

def test_splits_hold_the_documented_instances() -> None:
    sizes = {split: sorted({len(i["coords"]) for i in _instances(split)})
             for split in ("train", "validation", "test")}
    assert sizes["train"] == [50, 100] and len(_instances("train")) == 20
    assert sizes["validation"] == [200] and len(_instances("validation")) == 5
    test = _instances("test")
    assert len(test) == 21 and max(sizes["test"]) == 1889
    optima = json.loads((DATA_DIR / "tsplib_optima.json").read_text())
    assert {i["name"]: i["optimum"] for i in test} == optima
    assert optima["eil51"] == 426 and optima["rl1889"] == 316536


def test_tsplib_parser_reads_headers_in_both_styles() -> None:
    """ch130 writes `EDGE_WEIGHT_TYPE: EUC_2D`, eil51 `EDGE_WEIGHT_TYPE : EUC_2D`;
    d1655 uses scientific notation."""
    ch130 = scorer.parse_tsplib(DATA_DIR / "tsplib" / "ch130.tsp")
    eil51 = scorer.parse_tsplib(DATA_DIR / "tsplib" / "eil51.tsp")
    d1655 = scorer.parse_tsplib(DATA_DIR / "tsplib" / "d1655.tsp")
    assert (len(ch130), len(eil51), len(d1655)) == (130, 51, 1655)
    assert eil51[0] == [37.0, 52.0]
    assert all(math.isfinite(x) for point in d1655 for x in point)


def test_nearest_neighbour_matches_published_gap_on_tsplib() -> None:
    result = _evaluate(seed, _instances("test"))
    assert 20.0 <= result.metrics["gap_pct"] <= 28.0  # measured 23.59 %
    assert result.metrics["nearest_choice_share"] == 1.0
    assert "worst instance" in result.feedback


@pytest.mark.parametrize("split", ["train", "validation"])
def test_nearest_neighbour_matches_published_gap_on_uniform(split: str) -> None:
    result = _evaluate(seed, _instances(split))
    gaps = {k: v for k, v in result.metrics.items() if k.startswith("gap_pct_")}
    for group, gap in (gaps or {"all": result.metrics["gap_pct"]}).items():
        assert 15.0 <= gap <= 28.0, group  # measured n50 23.3, n100 25.8, n200 25.8
    assert result.score == pytest.approx(-result.metrics["gap_pct"])


def test_stored_optima_are_below_every_tour_we_build() -> None:
    """An optimum above a nearest-neighbour tour would mean a wrong reference."""
    for split in ("train", "validation", "test"):
        instances = _instances(split)
        for tour, inst in zip(harness.run(seed, instances), instances, strict=True):
            assert scorer.tour_length(np.asarray(tour), inst["coords"]) > inst["optimum"]


# --- the validator -------------------------------------------------------------------

# A 3 x 4 rectangle plus a point whose distances test the rounding: nint, not floor.
SQUARE = [{"name": "square", "group": "g", "coords": [[0, 0], [0, 3], [4, 3], [4, 0]],
           "optimum": 14}]


def test_tour_length_uses_tsplib_rounding() -> None:
    assert scorer.tour_length(np.array([0, 1, 2, 3]), SQUARE[0]["coords"]) == 14
    assert scorer.tour_length(np.array([0, 2, 1, 3]), SQUARE[0]["coords"]) == 18
    # sqrt(2) = 1.41 -> 1, sqrt(5) = 2.24 -> 2, sqrt(13) = 3.61 -> 4, 2.5 -> 3 (not 2)
    assert scorer.euc_2d(np.array([[0, 0], [0, 0], [0, 0], [0, 0]]),
                         np.array([[1, 1], [1, 2], [2, 3], [1.5, 2]])).tolist() == [1, 2, 4, 3]


@pytest.mark.parametrize("tour", [[0, 1, 2, 3], [2, 3, 0, 1], [3, 2, 1, 0]],
                         ids=["from-0", "rotated", "reversed"])
def test_any_rotation_or_direction_of_the_optimal_tour_scores_zero(tour) -> None:
    result = scorer.score([tour], SQUARE)
    assert result.score == 0.0 and result.metrics["gap_pct"] == 0.0


def test_a_longer_tour_scores_its_gap() -> None:
    assert scorer.score([[0, 2, 1, 3]], SQUARE).score == pytest.approx(-100 * 4 / 14)


@pytest.mark.parametrize("outputs", [
    [[0, 1, 2, math.nan]],
    [[0, 1, 2, math.inf]],
    [[0, 1, 2, 3.0]],
    [[0, 1, 2, True]],
    [[0, 1, 2, "3"]],
    [[0, 1, 2, None]],
    [[0, 1, 2, np.int64(3)]],
    [[0, 1, 2, -1]],
    [[0, 1, 2, 4]],
    [[0, 1, 2, 2**70]],
    [[0, 1, 2]],
    [[0, 1, 2, 3, 0]],
    [[0, 1, 2, 2]],
    [[0, 0, 0, 0]],
    [],
    [[0, 1, 2, 3], [0, 1, 2, 3]],
    {"square": [0, 1, 2, 3]},
    "0123",
    None,
    [(0, 1, 2, 3)],
    [[[0], [1], [2], [3]]],
], ids=["nan", "inf", "float", "bool", "str", "none", "numpy-int", "negative", "node-n",
        "huge", "too-short", "too-long", "repeated", "all-same", "no-tours", "extra-tour",
        "dict", "str-top", "none-top", "tuple", "nested"])
def test_malformed_output_is_invalid(outputs: object) -> None:
    with pytest.raises(InvalidOutput) as info:
        scorer.score(outputs, SQUARE)
    assert "\n" not in str(info.value)


def test_repeated_node_message_names_instance_and_nodes() -> None:
    instances = [SQUARE[0], {**SQUARE[0], "name": "second"}]
    with pytest.raises(InvalidOutput, match=r"second: not a permutation: node 2 .*node 3"):
        scorer.score([[0, 1, 2, 3], [0, 1, 2, 2]], instances)


# --- the harness ---------------------------------------------------------------------

def _candidate(fn) -> types.ModuleType:
    module = types.ModuleType("candidate")
    module.select_next_node = fn  # type: ignore[attr-defined]
    return module


def test_harness_starts_at_node_0_and_passes_what_it_documents() -> None:
    seen = []

    def spy(current, destination, unvisited, distances):
        seen.append((current, destination, unvisited.tolist(), distances.shape))
        return int(unvisited[-1])  # always the highest-numbered unvisited node

    assert harness.run(_candidate(spy), SQUARE) == [[0, 3, 2, 1]]
    assert seen[0] == (0, 0, [1, 2, 3], (4, 4))
    assert seen[1][:3] == (3, 0, [1, 2])


@pytest.mark.parametrize("choice", [np.int32(1), np.array(1), np.array([1])],
                         ids=["numpy-int", "0-d-array", "1-element-array"])
def test_harness_accepts_numpy_ints(choice) -> None:
    tours = harness.run(_candidate(lambda c, d, u, m: choice if 1 in u else int(u[0])), SQUARE)
    assert tours[0][1] == 1 and all(type(x) is int for x in tours[0])


@pytest.mark.parametrize("fn, message", [
    (lambda c, d, u, m: 0, "not in unvisited"),  # the start node is visited
    (lambda c, d, u, m: 17, "not in unvisited"),
    (lambda c, d, u, m: 1.0, "must return one node index"),
    (lambda c, d, u, m: True, "must return one node index"),
    (lambda c, d, u, m: None, "must return one node index"),
    (lambda c, d, u, m: u, "must return one node index"),
])
def test_harness_rejects_bad_choices(fn, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        harness.run(_candidate(fn), SQUARE)


def test_distance_matrix_is_read_only_for_the_candidate() -> None:
    def vandal(current, destination, unvisited, distances):
        distances[:] = 0
        return int(unvisited[0])

    with pytest.raises(ValueError, match="read-only"):
        harness.run(_candidate(vandal), SQUARE)


# --- through the real process sandbox ------------------------------------------------

def _sandbox_evaluate(problem: str, codes: list[str], split: str = "train") -> list:
    from evoengine.config.compose import load_run_config
    from evoengine.controller.setup import limits_for
    from evoengine.evaluation.evaluator import Evaluator
    from evoengine.evaluation.problem import Problem
    from evoengine.evaluation.sandbox.process import ProcessSandbox

    config, _ = load_run_config([f"problem={problem}", "sandbox=process"])
    loaded = Problem(config.problem)
    sandbox = ProcessSandbox(pool_size=1)
    try:
        evaluator = Evaluator(loaded, sandbox, limits_for(config))
        return [asyncio.run(evaluator.evaluate(code, split)) for code in codes]
    finally:
        sandbox.shutdown()


def test_evaluator_scores_the_seed_and_reports_a_bad_choice_through_the_sandbox() -> None:
    initial = (PROBLEM_DIR / "initial.py").read_text()
    revisit = initial.replace("return int(unvisited_nodes[np.argmin(scores)])",
                              "return current_node")
    good, bad = _sandbox_evaluate("tsp", [initial, revisit])
    direct = _evaluate(seed, _instances("train"))
    assert good.valid and good.score == pytest.approx(direct.score)
    assert good.features["nearest_choice_share"] == 1.0 and "code_length" in good.features
    assert not bad.valid and bad.error == "crash"
    assert "not in unvisited_nodes" in bad.feedback


@pytest.mark.slow
def test_evo_run_on_tsp_keeps_valid_programs(run_evo, tmp_path: Path) -> None:
    result = run_evo("run", "problem=tsp", "llm=gp", "search.max_evaluations=12",
                     "sandbox=process", "ui=plain", "name=tsp", "search.num_islands=2")
    assert result.returncode == 0, result.stderr
    db = tmp_path / "runs" / "tsp" / "archive.db"
    valid = archive_rows(db, "SELECT score, features FROM programs WHERE valid")
    assert valid and all(math.isfinite(score) and score <= 0 for score, _ in valid)
    assert all("nearest_choice_share" in json.loads(f) for _, f in valid)
    best = archive_rows(db, "SELECT MAX(score) FROM programs WHERE valid")[0][0]
    assert best >= -24.6  # never worse than the nearest-neighbour seed
    assert (tmp_path / "runs" / "tsp" / "best_program.py").is_file()


def test_evo_problems_lists_tsp_with_one_line(run_evo) -> None:
    result = run_evo("problems")
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    assert "Constructive TSP" in lines["tsp"]
    assert "guided local search" in lines["tsp_gls"]
