"""What a resume says it changed (evoengine/config/changes.py). A resume used to take
new problem settings (a timeout, a memory limit) silently while every stored program
kept the score it had under the old ones."""

from __future__ import annotations

from evoengine.config.changes import config_changes, describe_changes

OLD = {"problem": {"timeout_s": 60.0, "features": [{"name": "a", "bins": 10}],
                   "splits": {"train": {"count": 2}, "test": {"count": 5}}},
       "search": {"max_evaluations": 20, "features": [1, 2]}}


def test_nothing_changed_says_nothing() -> None:
    assert config_changes(OLD, OLD) == []
    assert describe_changes([]) == []


def test_changes_are_named_by_dotted_key_with_both_values() -> None:
    new = {"problem": {"timeout_s": 5.0, "features": [{"name": "a", "bins": 4}],
                       "splits": {"train": {"count": 3}}},
           "search": {"max_evaluations": 40, "features": [1, 2, 3]}}
    assert config_changes(OLD, new) == [
        ("problem.timeout_s", 60.0, 5.0),
        ("problem.features[0].bins", 10, 4),
        ("problem.splits.train.count", 2, 3),
        ("problem.splits.test", {"count": 5}, None),  # a split removed
        ("search.max_evaluations", 20, 40),
        ("search.features", [1, 2], [1, 2, 3]),  # other lengths: the whole list
    ]


def test_scoring_settings_get_a_note_and_grid_axes_do_not() -> None:
    notes = describe_changes([("problem.timeout_s", 60.0, 5.0),
                              ("problem.features[0].bins", 10, 4),
                              ("problem.memory_mb", 2048, 512),
                              ("search.max_evaluations", 20, 40)])
    assert notes == [
        "resume changes problem.timeout_s 60.0 -> 5.0, problem.features[0].bins 10 -> 4, "
        "problem.memory_mb 2048 -> 512, search.max_evaluations 20 -> 40",
        "note: problem.memory_mb, problem.timeout_s changed: the stored programs keep the "
        "scores they had under the old setting (`evo eval` scores one anew)",
    ]


def test_splits_have_their_own_note_and_long_values_are_cut() -> None:
    notes = describe_changes([("problem.splits.train.file", "a" * 60, "b.json")])
    assert notes == [
        f"resume changes problem.splits.train.file '{'a' * 36}... -> 'b.json'",
        "note: problem.splits changed: the stored programs keep the scores they had on the "
        "old instances",
    ]


def test_the_scorers_time_limit_gets_no_scoring_note() -> None:
    """Past problem.score_timeout_s the run stops; no stored score would differ."""
    assert describe_changes([("problem.score_timeout_s", 300.0, 30.0)]) == [
        "resume changes problem.score_timeout_s 300.0 -> 30.0"]
