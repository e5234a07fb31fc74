"""circle_packing: the scorer checks packings exactly, and the seed runs end to end."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from evoengine.evaluation.problem import import_file
from evoengine.evaluation.scoring import InvalidOutput
from tests.conftest import archive_rows

FOLDER = Path(__file__).resolve().parents[1] / "problems" / "circle_packing"
score = import_file(FOLDER / "score.py", "test_circle_packing_score")
TRAIN = score.load_instances("train", {"instances": [
    {"n": 26, "alphaevolve": 2.635863, "best_known": 2.635983}]}, FOLDER / "data")


def grid_packing(n: int = 26, radius: float = 1 / 12) -> dict:
    """26 circles of radius 1/12 on a 6 x 5 grid: valid, sum of radii 26/12 - margin."""
    centers = [[(i % 6 + 0.5) / 6, (i // 6 + 0.5) / 5] for i in range(n)]
    return {"centers": centers, "radii": [radius * (1 - 1e-9)] * n}


def check(packing: dict, n: int = 26) -> float:
    instance = dict(TRAIN[0], n=n, name=f"n{n}")
    return score.score([packing], [instance]).score


def test_a_valid_packing_scores_the_sum_of_radii_and_its_ratios() -> None:
    result = score.score([grid_packing()], TRAIN)
    assert result.score == pytest.approx(26 / 12, rel=1e-8)
    assert result.metrics["ratio_to_alphaevolve"] == pytest.approx(26 / 12 / 2.635863)
    assert result.metrics["ratio_to_best_known"] == pytest.approx(26 / 12 / 2.635983)
    assert result.features["radius_cv"] == pytest.approx(0.0, abs=1e-12)


def test_touching_exactly_is_allowed() -> None:
    # Two circles of radius 0.25 whose centres are exactly 0.5 apart, both touching
    # the square's sides: every comparison is an equality in floating point.
    packing = {"centers": [[0.25, 0.25], [0.75, 0.25]], "radii": [0.25, 0.25]}
    assert check(packing, n=2) == pytest.approx(0.5 * math.sqrt(13))


def test_overlap_by_a_hair_is_invalid() -> None:
    # Centres 0.25 apart (exact in binary), radii 0.125 and one ulp more.
    packing = {"centers": [[0.375, 0.5], [0.625, 0.5]],
               "radii": [0.125, math.nextafter(0.125, 1.0)]}
    with pytest.raises(InvalidOutput, match="circles 0 and 1 overlap"):
        check(packing, n=2)


@pytest.mark.parametrize("center,radius", [
    ([math.nextafter(0.1, 0.0), 0.5], 0.1),  # left side, by one ulp
    ([0.5, math.nextafter(0.9, 1.0)], 0.1),  # top side, by one ulp
    ([1.2, 0.5], 0.1),  # centre outside
])
def test_outside_the_square_by_a_hair_is_invalid(center, radius) -> None:
    with pytest.raises(InvalidOutput, match="leaves the unit square"):
        check({"centers": [center], "radii": [radius]}, n=1)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_and_infinity_are_invalid(bad) -> None:
    for packing in ({"centers": [[bad, 0.5]], "radii": [0.1]},
                    {"centers": [[0.5, 0.5]], "radii": [bad]}):
        with pytest.raises(InvalidOutput, match="finite"):
            check(packing, n=1)


@pytest.mark.parametrize("radius", [0.0, -0.1, -0.0])
def test_zero_and_negative_radii_are_invalid(radius) -> None:
    with pytest.raises(InvalidOutput, match="must be > 0"):
        check({"centers": [[0.5, 0.5]], "radii": [radius]}, n=1)


def test_wrong_count_is_invalid() -> None:
    packing = grid_packing(25)
    with pytest.raises(InvalidOutput, match="must be 26"):
        check(packing)
    packing = grid_packing()
    packing["radii"] = packing["radii"][:-1]
    with pytest.raises(InvalidOutput, match="radii must be 26"):
        check(packing)


@pytest.mark.parametrize("packing,match", [
    ({"centers": "abc", "radii": [0.1]}, "centers must be"),
    ({"centers": [[0.5, 0.5, 0.5]], "radii": [0.1]}, "not an \\(x, y\\) pair"),
    ({"centers": [[0.5, "0.5"]], "radii": [0.1]}, "not a number"),
    ({"centers": [[0.5, 0.5]], "radii": [True]}, "not a number"),
    ({"centers": [[0.5, 0.5]], "radii": [[0.1]]}, "not a number"),
    ({"centers": [[0.5, 0.5]]}, "expected centers and radii"),
    ([[0.5, 0.5], [0.1]], "expected centers and radii"),
])
def test_wrong_shapes_and_types_are_invalid(packing, match) -> None:
    with pytest.raises(InvalidOutput, match=match):
        check(packing, n=1)


def test_every_split_loads_and_train_is_the_benchmark() -> None:
    import yaml

    config = yaml.safe_load((FOLDER / "problem.yaml").read_text())
    assert set(config["splits"]) == {"train", "validation", "test"}
    loaded = {split: score.load_instances(split, value["spec"], FOLDER / "data")
              for split, value in config["splits"].items()}
    assert [i["n"] for i in loaded["train"]] == [26]
    assert all(i["n"] != 26 for i in loaded["validation"] + loaded["test"])


def test_other_n_score_on_the_26_scale() -> None:
    instance = {"name": "n24", "n": 24}
    centers = [[(i % 5 + 0.5) / 5, (i // 5 + 0.5) / 5] for i in range(24)]
    result = score.score([{"centers": centers, "radii": [0.1 * (1 - 1e-9)] * 24}],
                         [instance])
    assert result.metrics["sum_radii_n24"] == pytest.approx(2.4)
    assert result.score == pytest.approx(2.4 * math.sqrt(26 / 24))


@pytest.mark.slow
def test_the_seed_runs_end_to_end(run_evo, tmp_path: Path) -> None:
    result = run_evo("run", "problem=circle_packing", "llm=gp", "search.max_evaluations=12",
                     "sandbox=process", "ui=none", "name=cp")
    assert result.returncode == 0, result.stderr
    assert "train vs validation" in result.stdout
    db = tmp_path / "runs" / "cp" / "archive.db"
    seed_score = archive_rows(db, "SELECT score FROM programs WHERE operator = 'initial'")
    assert seed_score[0][0] == pytest.approx(26 / 12, rel=1e-6)
    splits = dict(archive_rows(db, "SELECT split, COUNT(*) FROM evaluations GROUP BY split"))
    assert splits["train"] == 12 and 1 <= splits["validation"] <= 3
