"""The novelty filter (``mutation.novelty``): the text backend always, the embedding
backend only where the ``novelty`` extra is installed, and a real run that skips
near-copies of its programs before evaluating them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from evoengine.config.compose import ConfigError
from evoengine.config.schema import MutationConfig
from evoengine.mutation.novelty import (
    EmbeddingBackend,
    NoveltyFilter,
    TextBackend,
    make_novelty_filter,
    normalise_code,
)
from tests.conftest import archive_rows, program_signature

needs_embeddings = pytest.mark.skipif(
    not EmbeddingBackend.available(),
    reason="the novelty extra is not installed: pip install 'evoengine[novelty]'")

PROGRAM = '''"""A module docstring outside the block."""
import numpy as np


# EVOLVE-BLOCK-START
def priority(item: float, bins: np.ndarray) -> np.ndarray:
    """Prefer the bin the item fills best."""
    remaining = bins - item  # room left after placing the item
    score = -remaining
    if item > 0.5:
        score = score - 0.25 * np.sqrt(remaining)
    for k in range(3):
        score = score + np.log1p(np.maximum(remaining - k * 0.1, 0.0))
    return score
# EVOLVE-BLOCK-END
'''

REFORMATTED = '''"""A module docstring outside the block."""
import numpy as np


# EVOLVE-BLOCK-START
def priority(item: float,
             bins: np.ndarray) -> np.ndarray:
    """A different docstring: docstrings, comments and layout do not count."""
    # a new comment
    remaining = (bins - item)
    score = -remaining

    if item > .5:   # same value, other spelling
        score = score - 0.25*np.sqrt(remaining)
    for k in range(3):
        score = score + np.log1p(np.maximum(remaining - k*0.1, 0.0))
    return score
# EVOLVE-BLOCK-END
'''

REWRITTEN = '''"""A module docstring outside the block."""
import numpy as np


# EVOLVE-BLOCK-START
def priority(item: float, bins: np.ndarray) -> np.ndarray:
    """Worst fit with a tie-break on bin index."""
    order = np.arange(bins.size, dtype=float)
    spare = np.where(bins >= item, bins, -np.inf)
    return spare - 1e-6 * order
# EVOLVE-BLOCK-END
'''

UNRELATED = '''def reverse_words(sentence):
    """Return the words of a sentence in reverse order."""
    words = sentence.split()
    return " ".join(reversed(words))


class Stack:
    def __init__(self):
        self.items = []
'''


def _text_filter(threshold: float = 0.95, window: int = 200) -> NoveltyFilter:
    return NoveltyFilter(TextBackend(), threshold, window)


# --- text backend ----------------------------------------------------------------------------
def test_only_the_block_body_counts_and_formatting_comments_docstrings_do_not() -> None:
    assert normalise_code(PROGRAM) == normalise_code(REFORMATTED)
    outside = PROGRAM.replace("import numpy as np", "import numpy as np\nimport math")
    assert normalise_code(outside) == normalise_code(PROGRAM)
    assert "docstring" not in normalise_code(PROGRAM)
    broken = "def f(:\n    return 1  # a comment\n\n\n"  # does not parse: comments go anyway
    assert normalise_code(broken) == "def f(:\n    return 1"


def test_a_copy_modulo_whitespace_and_comments_is_rejected_with_the_similar_program() -> None:
    novelty = _text_filter()
    novelty.add(0, 7, PROGRAM)
    novel, similarity, similar_id = novelty.check(0, REFORMATTED)
    assert (novel, similarity, similar_id) == (False, 1.0, 7)


def test_a_real_change_passes() -> None:
    novelty = _text_filter()
    novelty.add(0, 7, PROGRAM)
    novel, similarity, similar_id = novelty.check(0, REWRITTEN)
    assert novel and similarity < 0.5 and similar_id == 7
    assert novelty.check(1, REFORMATTED) == (True, 0.0, None)  # other islands are apart


def test_the_threshold_is_respected() -> None:
    small_change = PROGRAM.replace("k * 0.1", "k * 0.2")
    probe = _text_filter()
    probe.add(0, 1, PROGRAM)
    _, similarity, _ = probe.check(0, small_change)
    assert 0.8 < similarity < 1.0  # one token of about 60 changed
    for threshold, novel in ((similarity, False), (similarity + 1e-9, True),
                             (similarity - 0.05, False), (1.0, True)):
        novelty = _text_filter(threshold=min(threshold, 1.0))
        novelty.add(0, 1, PROGRAM)
        assert novelty.check(0, small_change)[0] is novel, threshold


def test_the_window_is_bounded_per_island() -> None:
    novelty = _text_filter(window=3)
    variants = [PROGRAM.replace("range(3)", f"range({n})").replace("0.25", f"{n}.5 * item")
                .replace("k * 0.1", f"k * {n} + item ** {n}") for n in range(10)]
    for program_id, code in enumerate(variants):
        novelty.add(0, program_id, code)
    assert novelty.size(0) == 3
    assert novelty.check(0, variants[-1])[:2] == (False, 1.0)  # still remembered
    assert novelty.check(0, variants[0])[0]  # pushed out of the window: novel again
    assert novelty.check(0, variants[0])[2] in (7, 8, 9)


def test_a_check_as_of_an_earlier_step_sees_that_window() -> None:
    """search.deterministic: a step compares its child with the window of when it was
    asked, not with what steps written since then added."""
    novelty = _text_filter(window=2)
    variants = [PROGRAM.replace("range(3)", f"range({n})").replace("0.25", f"{n}.5 * item")
                .replace("k * 0.1", f"k * {n} + item ** {n}") for n in range(6)]
    novelty.retain_for(0)  # a step asked before anything was written is still running
    for told, code in enumerate(variants):
        novelty.add(0, told, code, told)
    assert novelty.check(0, variants[0], as_of=1)[:2] == (False, 1.0)  # its window: 0, 1
    assert novelty.check(0, variants[0], as_of=5)[0]  # the latest window: 4, 5
    assert novelty.check(0, variants[5], as_of=3)[0]  # not written yet as of step 3
    assert novelty.size(0) == 6
    novelty.retain_for(4)  # the oldest step still to check was asked after 4 were written
    assert novelty.size(0) == 3  # entries 3, 4, 5: the windows as of 4 (3, 4) and 5 (4, 5)
    assert novelty.check(0, variants[3], as_of=4)[:2] == (False, 1.0)


def test_only_valid_programs_are_remembered_and_remember_all_passes_them_on() -> None:
    @dataclass
    class Stored:
        island: int
        id: int
        code: str
        valid: bool

    programs = [Stored(0, 1, PROGRAM, False), Stored(1, 2, PROGRAM, True)]
    novelty = _text_filter()
    assert list(novelty.remember_all(programs)) == programs
    assert novelty.size(0) == 0 and novelty.size(1) == 1
    assert novelty.check(0, PROGRAM)[0]  # close to a crash: maybe its fix, so evaluated
    assert novelty.check(1, PROGRAM) == (False, 1.0, 2)


def test_a_check_vectorises_only_the_query_and_scores_the_window_in_one_pass() -> None:
    """What keeps a check cheap with a full window of 200 (about 2 ms on a laptop core;
    measured, not asserted): the window's vectors are computed once and kept, and a
    check vectorises only the new program, then compares it with the whole window in
    one call."""
    backend = TextBackend()
    vectorised: list[str] = []
    passes: list[int] = []
    vectors, similarities = backend.vectors, backend.similarities

    def counted_vectors(texts: list[str]) -> list:
        vectorised.extend(texts)
        return vectors(texts)

    def counted_similarities(query, others) -> list[float]:
        passes.append(len(others))
        return similarities(query, others)

    backend.vectors = counted_vectors  # type: ignore[method-assign]
    backend.similarities = counted_similarities  # type: ignore[method-assign]
    novelty = NoveltyFilter(backend, 0.95, 200)
    for n in range(200):
        novelty.add(0, n, PROGRAM.replace("0.25", str(n)).replace("range(3)", f"range({n})"))
    novelty.check(0, PROGRAM)  # computes the window's vectors once
    assert len(vectorised) == 201
    vectorised.clear()
    passes.clear()
    for n in range(20):
        novelty.check(0, PROGRAM.replace("k * 0.1", f"k * {n}"))
    assert len(vectorised) == 20 and passes == [200] * 20


def test_backend_choice_and_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    assert make_novelty_filter(MutationConfig()) == (None, "")  # off by default
    novelty, note = make_novelty_filter(MutationConfig(novelty=True, novelty_backend="text"))
    assert isinstance(novelty.backend, TextBackend) and "text similarity" in note
    monkeypatch.setattr(EmbeddingBackend, "available", staticmethod(lambda: False))
    novelty, note = make_novelty_filter(MutationConfig(novelty=True, novelty_backend="auto"))
    assert isinstance(novelty.backend, TextBackend)
    assert "extra 'novelty'" in note and "[" not in note and "\n" not in note
    with pytest.raises(ConfigError, match=r"pip install 'evoengine\[novelty\]'") as error:
        make_novelty_filter(MutationConfig(novelty=True, novelty_backend="embedding"))
    assert "\n" not in str(error.value)


# --- embedding backend (the novelty extra) -------------------------------------------------
@pytest.fixture(scope="module")
def embedding() -> EmbeddingBackend:
    return EmbeddingBackend()  # one model load for the module's tests


@needs_embeddings
def test_auto_uses_embeddings_when_installed() -> None:
    novelty, note = make_novelty_filter(MutationConfig(novelty=True, novelty_backend="auto"))
    assert isinstance(novelty.backend, EmbeddingBackend) and "MiniLM" in note


@needs_embeddings
def test_similar_code_is_closer_than_dissimilar_code(embedding: EmbeddingBackend) -> None:
    base, copy, rewrite, other = embedding.vectors(
        [normalise_code(c) for c in (PROGRAM, REFORMATTED, REWRITTEN, UNRELATED)])
    same, close, far = embedding.similarities(base, [copy, rewrite, other])
    assert same == pytest.approx(1.0, abs=1e-5)
    assert 1.0 > close > far and far < 0.6


@needs_embeddings
def test_embedding_filter_rejects_a_copy_and_sees_past_the_model_length(
        embedding: EmbeddingBackend) -> None:
    novelty = NoveltyFilter(embedding, 0.999, 200)
    novelty.add(0, 3, PROGRAM)
    assert novelty.check(0, REFORMATTED)[0] is False
    assert novelty.check(0, UNRELATED)[0] is True
    # longer than the model's 256 word pieces: a change at the end still counts
    filler = "".join(f"    v{n} = np.maximum(remaining, {n}.0) * item\n" for n in range(60))
    long_code = PROGRAM.replace("    return score\n", filler + "    return score\n")
    novelty.add(1, 4, long_code)
    tail_changed = long_code.replace("    return score\n", "    return -score[::-1]\n")
    _, similarity, _ = novelty.check(1, tail_changed)
    assert similarity < 1.0 - 1e-4


# --- a real run ------------------------------------------------------------------------------
NOVELTY_RUN = ["problem=bin_packing_quick", "llm=gp", "mutation.novelty=true",
               "mutation.novelty_backend=text", "mutation.novelty_threshold=0.9",
               "sandbox=process", "ui=plain"]


def test_a_run_skips_near_copies_and_finishes(run_evo, tmp_path: Path) -> None:
    result = run_evo("run", *NOVELTY_RUN, "search.max_evaluations=15", "name=novel")
    assert result.returncode == 0, result.stderr
    assert "novelty filter: text similarity" in result.stdout
    db = tmp_path / "runs" / "novel" / "archive.db"
    evaluations = archive_rows(db, "SELECT COUNT(*) FROM evaluations WHERE split='train'")
    assert evaluations[0][0] == 15
    skipped = archive_rows(db, """SELECT edit, program_id FROM mutation_calls
                                  WHERE outcome = 'too_similar'""")
    assert skipped, archive_rows(db, "SELECT outcome, COUNT(*) FROM mutation_calls "
                                     "GROUP BY outcome")
    assert all(edit.startswith("too similar to program ") and program_id is None
               for edit, program_id in skipped)
    assert archive_rows(db, "SELECT status FROM runs")[0][0] == "finished"


def test_a_resumed_run_rebuilds_the_filter_and_matches_an_uninterrupted_one(
        run_evo, tmp_path: Path) -> None:
    common = [*NOVELTY_RUN, "search.num_islands=2", "search.llm_concurrency=1",
              "search.eval_concurrency=1", "seed=2"]
    whole = run_evo("run", *common, "search.max_evaluations=30", "name=whole")
    assert whole.returncode == 0, whole.stderr
    first = run_evo("run", *common, "search.max_evaluations=15", "name=parts")
    assert first.returncode == 0, first.stderr
    rest = run_evo("resume", "runs/parts", "search.max_evaluations=30")
    assert rest.returncode == 0, rest.stderr
    assert "novelty filter" in rest.stdout
    parts_db = tmp_path / "runs" / "parts" / "archive.db"
    whole_db = tmp_path / "runs" / "whole" / "archive.db"
    assert program_signature(parts_db) == program_signature(whole_db)
    query = "SELECT step, outcome, edit FROM mutation_calls ORDER BY step"
    assert archive_rows(parts_db, query) == archive_rows(whole_db, query)
