"""Edit formats of an LLM reply: SEARCH/REPLACE blocks and full rewrites."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from evoengine.mutation import edits_search_replace as search_replace
from evoengine.mutation.edits import (
    EditFormatError,
    EditResult,
    SearchReplace,
    apply_full_rewrite,
    apply_search_replace,
    diff_summary,
    parse_search_replace,
)
from evoengine.mutation.evolve_block import (
    EvolveBlockError,
    check_edit_confined,
    split_evolve_block,
)

REPO = Path(__file__).resolve().parents[1]
BIN_PACKING = (REPO / "problems" / "bin_packing" / "initial.py").read_text()

PROGRAM = '''"""A toy problem."""

import numpy as np


# EVOLVE-BLOCK-START
def priority(item: float, bins: np.ndarray) -> np.ndarray:
    """Best fit."""
    room = bins - item
    if item > 0.5:
        room = room * 2

    return -room
# EVOLVE-BLOCK-END


def run(items):
    return [priority(i, np.ones(3)) for i in items]
'''


def sr(search: str, replace: str) -> str:
    return f"<<<<<<< SEARCH\n{search}=======\n{replace}>>>>>>> REPLACE\n"


def applied(parent: str, result: EditResult) -> str:
    """Assert the result is 'applied', the child only differs inside the block, and
    the prefix and suffix are the parent's byte for byte; return the child."""
    assert result.outcome == "applied", result.message
    assert result.code is not None
    check_edit_confined(parent, result.code)
    before, after = split_evolve_block(parent), split_evolve_block(result.code)
    assert (after.prefix, after.suffix) == (before.prefix, before.suffix)
    return result.code


# --------------------------------------------------------------------------- parsing

def test_parse_blocks_with_fences_and_prose() -> None:
    reply = ("Here is my idea.\n\n```python\n" + sr("a = 1\n", "a = 2\n") + "```\n"
             "Explanation\n===========\nand another one:\n```\n"
             + sr("b = 1\n\n", "") + "```\nDone.")
    assert parse_search_replace(reply) == [SearchReplace("a = 1\n", "a = 2\n"),
                                           SearchReplace("b = 1\n\n", "")]


def test_parse_no_blocks_is_empty_and_crlf_is_read() -> None:
    assert parse_search_replace("I would not change anything.") == []
    assert parse_search_replace(sr("x\n", "y\n").replace("\n", "\r\n")) == [
        SearchReplace("x\n", "y\n")]


@pytest.mark.parametrize(("reply", "expected"), [
    ("<<<<<<< SEARCH\nx = 1\n=======\nx = 2\n", "not closed"),
    ("<<<<<<< SEARCH\nx = 1\n", "not closed"),
    ("<<<<<<< SEARCH\nx = 1\n>>>>>>> REPLACE\n", "must end with a '=======' line"),
    ("<<<<<<< SEARCH\nx\n=======\ny\n<<<<<<< SEARCH\nx\n=======\ny\n>>>>>>> REPLACE\n",
     "must end with a '>>>>>>> REPLACE' line"),
    ("x = 2\n>>>>>>> REPLACE\n", "without a '<<<<<<< SEARCH'"),
    ("<<<<<<< SEARCH\n=======\nx = 2\n>>>>>>> REPLACE\n", "SEARCH section is empty"),
    ("<<<<<<< SEARCH\n  \n=======\nx = 2\n>>>>>>> REPLACE\n", "SEARCH section is empty"),
])
def test_parse_broken_structure(reply: str, expected: str) -> None:
    with pytest.raises(EditFormatError, match=expected) as info:
        parse_search_replace(reply)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- search/replace

def test_exact_block_on_the_bin_packing_seed() -> None:
    result = apply_search_replace(
        BIN_PACKING, sr("    return -(bins - item)\n", "    return -(bins - item) ** 2\n"))
    child = applied(BIN_PACKING, result)
    assert child == BIN_PACKING.replace("-(bins - item)\n", "-(bins - item) ** 2\n")
    assert result.message == "Applied 1 SEARCH/REPLACE block."
    ast.parse(child)


def test_several_blocks_apply_in_order_inside_prose_and_fences() -> None:
    reply = ("I'll scale the room differently.\n```python\n"
             + sr("    room = bins - item\n", "    room = (bins - item) / bins\n")
             + "```\nand then use the scaled value:\n```python\n"
             + sr("    room = (bins - item) / bins\n    if item > 0.5:\n",
                  "    room = (bins - item) / bins\n    if item > 0.4:\n")
             + sr("    return -room\n", "    return -room + 0.01 * bins\n")
             + "```\nThis should help.")
    child = applied(PROGRAM, apply_search_replace(PROGRAM, reply))
    assert "room = (bins - item) / bins\n    if item > 0.4:\n" in child
    assert "return -room + 0.01 * bins\n" in child


def test_indentation_quoted_without_indent_is_reindented() -> None:
    reply = sr("if item > 0.5:\n    room = room * 2\n",
               "if item > 0.25:\n    room = room * 3\nroom = room + 1\n")
    result = apply_search_replace(PROGRAM, reply)
    child = applied(PROGRAM, result)
    assert ("    if item > 0.25:\n        room = room * 3\n    room = room + 1\n" in child)
    assert "re-indented by +4 columns" in result.message
    ast.parse(child)


def test_indentation_quoted_with_extra_indent_is_reindented() -> None:
    reply = sr("        room = bins - item\n        if item > 0.5:\n",
               "        room = bins - item + 1e-9\n        if item > 0.5:\n")
    result = apply_search_replace(PROGRAM, reply)
    child = applied(PROGRAM, result)
    assert "\n    room = bins - item + 1e-9\n    if item > 0.5:\n" in child
    assert "re-indented by -4 columns" in result.message
    ast.parse(child)


def test_trailing_whitespace_tabs_and_blank_lines_are_tolerated() -> None:
    # The model used tabs, added trailing spaces and dropped the blank line.
    reply = sr("\tif item > 0.5:   \n\t\troom = room * 2\n\treturn -room\n",
               "\tif item > 0.5:\n\t\troom = room * 4\n\n\treturn -room\n")
    result = apply_search_replace(PROGRAM, reply)
    child = applied(PROGRAM, result)
    assert "    if item > 0.5:\n        room = room * 4\n\n    return -room\n" in child
    assert "\t" not in child
    assert "ignoring whitespace" in result.message


def test_program_indented_with_tabs_keeps_tabs() -> None:
    code = "import os\n# EVOLVE-BLOCK-START\ndef f(x):\n\tif x:\n\t\treturn 1\n\treturn 0\n" \
           "# EVOLVE-BLOCK-END\n"
    child = applied(code, apply_search_replace(
        code, sr("    return 0\n", "    y = x * 2\n    return y\n")))
    assert child.endswith("\t\treturn 1\n\ty = x * 2\n\treturn y\n# EVOLVE-BLOCK-END\n")


def test_first_of_several_matches_is_changed_and_reported() -> None:
    code = "# EVOLVE-BLOCK-START\nx = 0\nx = 0\n# EVOLVE-BLOCK-END\n"
    result = apply_search_replace(code, sr("x = 0\n", "x = 1\n"))
    assert applied(code, result) == "# EVOLVE-BLOCK-START\nx = 1\nx = 0\n# EVOLVE-BLOCK-END\n"
    assert "matches 2 places (lines 2, 3); only the first was changed" in result.message


def test_many_blocks_matching_many_places_keep_the_message_short() -> None:
    """Thousands of blocks that each matched thousands of places once made a 74 MB
    message (stored, and shown to the model): places and notes are capped."""
    code = "# EVOLVE-BLOCK-START\n" + "x = 0\n" * 40 + "# EVOLVE-BLOCK-END\n"
    result = apply_search_replace(code, sr("x = 0\n", "x = 1\n") * 30)
    assert result.outcome == "applied" and result.code.count("x = 1") == 30
    assert result.message.startswith("Applied 30 SEARCH/REPLACE blocks. Block 1 matches 40 "
                                     "places (lines 2, 3, 4, 5, 6, ... 35 more); only the "
                                     "first was changed. Block 2 matches 39 places")
    assert result.message.endswith("Block 10 matches 31 places (lines 11, 12, 13, 14, 15, "
                                   "... 26 more); only the first was changed. 20 more notes "
                                   "left out.")


def test_unmatched_shows_the_nearest_lines_with_numbers() -> None:
    reply = (sr("    return -room\n", "    return room\n")
             + sr("    room = bins - itm\n    if item > 0.6:\n", "    room = 0\n"))
    result = apply_search_replace(PROGRAM, reply)
    assert result.outcome == "unmatched" and result.code is None
    assert "block 2 of 2 does not match" in result.message
    assert "No block was applied" in result.message
    assert "Closest match in the program: lines 9-10 (similarity 0.83)" in result.message
    assert "   9 |     room = bins - item\n  10 |     if item > 0.5:" in result.message


def test_nearest_match_in_a_long_program_is_found_with_few_difflib_scores(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """difflib's cost grows with the square of the window, so it scores only the best
    few windows of a cheap linear ranking, and none for a long search (the speed is
    measured, not asserted: this is the property behind it)."""
    scored: list[int] = []

    class CountingMatcher(search_replace.SequenceMatcher):
        def ratio(self) -> float:
            scored.append(1)
            return super().ratio()

    monkeypatch.setattr(search_replace, "SequenceMatcher", CountingMatcher)
    body = "".join(f"    v{i} = compute(item, bins, {i}) * weight_{i % 7}\n" for i in range(2000))
    code = f"# EVOLVE-BLOCK-START\ndef f(item, bins):\n{body}# EVOLVE-BLOCK-END\n"
    for size, fewest, most in ((30, 1, search_replace._CANDIDATES), (300, 0, 0)):
        search = "".join(f"    v{i} = compute(item, bins, {i}) * wieght_{i % 7}\n"
                         for i in range(700, 700 + size))
        scored.clear()
        result = apply_search_replace(code, sr(search, "    pass\n"))
        assert fewest <= len(scored) <= most
        assert result.outcome == "unmatched"
        assert f"Closest match in the program: lines 703-{702 + size}" in result.message
        assert "\n 703 |     v700 = compute(item, bins, 700) * weight_0\n" in result.message


def test_a_parent_without_markers_is_the_callers_error() -> None:
    with pytest.raises(EvolveBlockError):
        apply_search_replace("x = 1\n", sr("x = 1\n", "x = 2\n"))
    with pytest.raises(EvolveBlockError):
        apply_full_rewrite("x = 1\n", "```python\nx = 2\n```")


def test_search_in_the_prefix_is_rejected() -> None:
    result = apply_search_replace(BIN_PACKING, sr("import numpy as np\n",
                                                  "import numpy as np\nimport math\n"))
    assert result.outcome == "rejected" and result.code is None
    assert "changes line 6, outside the EVOLVE-BLOCK (only lines 10-23 may change)" \
        in result.message


def test_search_including_a_marker_or_the_suffix_is_rejected() -> None:
    marker = apply_search_replace(PROGRAM, sr(
        "# EVOLVE-BLOCK-START\ndef priority(item: float, bins: np.ndarray) -> np.ndarray:\n",
        "def priority(item, bins):\n"))
    assert marker.outcome == "rejected"
    suffix = apply_search_replace(PROGRAM, sr("def run(items):\n", "def run(xs):\n"))
    assert suffix.outcome == "rejected"
    assert "outside the EVOLVE-BLOCK" in suffix.message


def test_replacement_adding_a_marker_is_rejected() -> None:
    result = apply_search_replace(PROGRAM, sr("    return -room\n",
                                              "    return -room\n# EVOLVE-BLOCK-END\n"))
    assert result.outcome == "rejected"
    assert "markers" in result.message


def test_noop_when_replace_equals_search() -> None:
    result = apply_search_replace(PROGRAM, sr("    return -room\n", "    return -room\n"))
    assert result == EditResult("noop", None, result.message)
    undo = sr("    return -room\n", "    return room\n") + sr("    return room\n",
                                                            "    return -room\n")
    assert apply_search_replace(PROGRAM, undo).outcome == "noop"
    # Re-indenting a tolerant match back to the program's text is a no-op as well.
    assert apply_search_replace(PROGRAM, sr("return -room\n", "return -room\n")).outcome \
        == "noop"


@pytest.mark.parametrize("reply", [
    "<<<<<<< SEARCH\n    return -room\n=======\n    return room\n",
    "<<<<<<< SEARCH\n=======\n    return room\n>>>>>>> REPLACE\n",
    "Just make it faster.",
])
def test_malformed_search_replace_replies(reply: str) -> None:
    result = apply_search_replace(PROGRAM, reply)
    assert result.outcome == "malformed" and result.code is None
    assert result.message


def test_deletion_and_crlf_program() -> None:
    code = PROGRAM.replace("\n", "\r\n")
    child = applied(code, apply_search_replace(
        code, sr("    if item > 0.5:\n        room = room * 2\n", "")))
    assert "room * 2" not in child
    assert "\r\n    return -room\r\n" in child
    assert "\n" not in child.replace("\r\n", "")


# --------------------------------------------------------------------------- full rewrite

NEW_BODY = "def priority(item, bins):\n    return bins - item\n"


def test_full_rewrite_without_markers_uses_the_whole_fence() -> None:
    reply = f"Let's try worst fit.\n\n```python\n{NEW_BODY}```\nThat's it."
    result = apply_full_rewrite(BIN_PACKING, reply)
    child = applied(BIN_PACKING, result)
    assert split_evolve_block(child).body == NEW_BODY
    assert "(2 lines)" in result.message


def test_full_rewrite_takes_the_last_fence_and_bare_fences() -> None:
    reply = (f"First attempt:\n```python\ndef priority(item, bins):\n    return 0\n```\n"
             f"Better:\n```\n{NEW_BODY}```\n")
    child = applied(PROGRAM, apply_full_rewrite(PROGRAM, reply))
    assert split_evolve_block(child).body == NEW_BODY


def test_full_rewrite_with_markers_takes_only_the_block() -> None:
    reply = ("Here is the whole program:\n```python\nimport numpy as np\nimport math\n\n"
             f"# EVOLVE-BLOCK-START\n{NEW_BODY}# EVOLVE-BLOCK-END\n\nprint('changed')\n```\n"
             "And a usage example:\n```python\nprint(priority(0.5, [1.0]))\n```\n")
    result = apply_full_rewrite(BIN_PACKING, reply)
    child = applied(BIN_PACKING, result)
    assert split_evolve_block(child).body == NEW_BODY
    assert "import math" not in child and "changed" not in child
    assert "outside the EVOLVE-BLOCK in the reply differs" in result.message


def test_full_rewrite_with_markers_copying_the_program_has_no_note() -> None:
    reply = "```python\n" + BIN_PACKING.replace("-(bins - item)", "item - bins") + "```"
    result = apply_full_rewrite(BIN_PACKING, reply)
    assert applied(BIN_PACKING, result).count("item - bins") == 1
    assert "ignored" not in result.message


def test_a_fence_closes_only_with_as_many_backticks_or_more() -> None:
    """CommonMark's rule: a ```` fence holds ``` lines; up to three spaces may come
    before the closing backticks and only blanks after them."""
    reply = (f"````python\n{NEW_BODY}```\nnot closed yet\n    ````\n"  # 4 spaces: content
             "   `````  \t\nafter\n")
    body = split_evolve_block(applied(BIN_PACKING, apply_full_rewrite(BIN_PACKING,
                                                                      reply))).body
    assert body == f"{NEW_BODY}```\nnot closed yet\n    ````\n"
    assert apply_full_rewrite(BIN_PACKING, f"```python\n{NEW_BODY}``` x\n").outcome == (
        "malformed")  # text after the backticks: not a closing fence, so never closed


def test_a_reply_of_a_million_backticks_is_malformed(monkeypatch: pytest.MonkeyPatch) -> None:
    # it used to compile a regex of the fence itself, seconds of the event loop
    import re

    compile_regex = re.compile

    def no_pattern_from_the_reply(pattern: str, *args: object) -> re.Pattern:
        assert len(pattern) < 1000, "a regex was built from the reply"
        return compile_regex(pattern, *args)

    monkeypatch.setattr(re, "compile", no_pattern_from_the_reply)
    assert apply_full_rewrite(BIN_PACKING, "`" * 1_000_000).outcome == "malformed"


def test_full_rewrite_noop_and_syntax_errors_are_applied() -> None:
    body = split_evolve_block(PROGRAM).body
    assert apply_full_rewrite(PROGRAM, f"```python\n{body}```").outcome == "noop"
    broken = applied(PROGRAM, apply_full_rewrite(PROGRAM, "```python\ndef priority(:\n```"))
    with pytest.raises(SyntaxError):
        ast.parse(broken)


@pytest.mark.parametrize(("reply", "outcome"), [
    ("I would use worst fit instead.", "malformed"),
    ("```bash\npip install numpy\n```", "malformed"),
    ("```python\ndef priority(item, bins):\n    return bins", "malformed"),  # cut off
    ("```python\n\n```", "malformed"),
    ("```python\n# EVOLVE-BLOCK-START\nx = 1\n```", "rejected"),
    ("```python\n# EVOLVE-BLOCK-END\nx = 1\n# EVOLVE-BLOCK-START\n```", "rejected"),
])
def test_full_rewrite_failures(reply: str, outcome: str) -> None:
    result = apply_full_rewrite(PROGRAM, reply)
    assert result.outcome == outcome and result.code is None
    assert result.message


# --------------------------------------------------------------------------- results and diffs

def test_edit_result_code_is_set_exactly_when_applied() -> None:
    with pytest.raises(ValueError):
        EditResult("applied", None, "")
    with pytest.raises(ValueError):
        EditResult("noop", "x", "")
    with pytest.raises(ValueError):
        EditResult("done", None, "")


def test_diff_summary_is_a_unified_diff() -> None:
    child = applied(PROGRAM, apply_search_replace(PROGRAM, sr("    return -room\n",
                                                              "    return room\n")))
    diff = diff_summary(PROGRAM, child)
    assert diff.startswith("--- parent\n+++ child\n@@ ")
    assert "\n-    return -room\n+    return room\n" in diff
    assert diff_summary(PROGRAM, PROGRAM) == ""
    assert "No newline at end of file" in diff_summary("a\n", "a")
