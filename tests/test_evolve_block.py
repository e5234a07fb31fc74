"""The EVOLVE-BLOCK split and the guard that edits stay inside the block."""

from __future__ import annotations

import pytest

from evoengine.mutation.evolve_block import (
    EvolveBlock,
    EvolveBlockError,
    check_edit_confined,
    split_evolve_block,
)

PROGRAM = """import numpy as np

# EVOLVE-BLOCK-START
def priority(item, bins):
    return -(bins - item)
# EVOLVE-BLOCK-END


def solve(items):
    return [priority(i, np.ones(3)) for i in items]
"""


def test_split_cuts_at_the_marker_lines_and_reassembles_exactly() -> None:
    block = split_evolve_block(PROGRAM)
    assert block.prefix.endswith("# EVOLVE-BLOCK-START\n")
    assert block.body == "def priority(item, bins):\n    return -(bins - item)\n"
    assert block.suffix.startswith("# EVOLVE-BLOCK-END\n")
    assert block.prefix + block.body + block.suffix == PROGRAM
    assert block.body_first_line == 4


def test_with_body_replaces_only_the_body() -> None:
    block = split_evolve_block(PROGRAM)
    child = block.with_body("def priority(item, bins):\n    return bins\n")
    assert child == PROGRAM.replace("-(bins - item)", "bins")


def test_with_body_keeps_the_end_marker_on_its_own_line() -> None:
    block = EvolveBlock(prefix="# EVOLVE-BLOCK-START\n", body="", suffix="# EVOLVE-BLOCK-END\n")
    assert block.with_body("x = 1") == "# EVOLVE-BLOCK-START\nx = 1\n# EVOLVE-BLOCK-END\n"
    assert split_evolve_block(block.with_body("x = 1")).body == "x = 1\n"


def test_markers_may_be_indented_and_carry_trailing_text() -> None:
    code = ("class Policy:\n"
            "    #  EVOLVE-BLOCK-START (tuned by the search)\n"
            "    def act(self):\n        return 1\n"
            "    # EVOLVE-BLOCK-END -- do not edit below\n"
            "    name = 'p'\n")
    block = split_evolve_block(code)
    assert block.body == "    def act(self):\n        return 1\n"
    assert block.prefix + block.body + block.suffix == code


def test_crlf_and_missing_final_newline_survive_byte_for_byte() -> None:
    code = "import os\r\n# EVOLVE-BLOCK-START\r\nx = 1\r\n# EVOLVE-BLOCK-END\r\nprint(x)"
    block = split_evolve_block(code)
    assert block.body == "x = 1\r\n"
    assert block.prefix + block.body + block.suffix == code


def test_a_marker_mentioned_inside_code_is_not_a_marker() -> None:
    code = PROGRAM + "MESSAGE = '# EVOLVE-BLOCK-START is where edits begin'\n"
    assert split_evolve_block(code).body == split_evolve_block(PROGRAM).body


@pytest.mark.parametrize(("code", "expected"), [
    ("x = 1\n", "no EVOLVE-BLOCK markers"),
    ("# EVOLVE-BLOCK-START\nx = 1\n", "no '# EVOLVE-BLOCK-END' line after it"),
    ("x = 1\n# EVOLVE-BLOCK-END\n", "no '# EVOLVE-BLOCK-START' line before it"),
    ("# EVOLVE-BLOCK-START\n# EVOLVE-BLOCK-START\nx = 1\n# EVOLVE-BLOCK-END\n",
     "appears 2 times (lines 1, 2)"),
    ("# EVOLVE-BLOCK-START\nx = 1\n# EVOLVE-BLOCK-END\n# EVOLVE-BLOCK-END\n",
     "appears 2 times (lines 3, 4)"),
    ("# EVOLVE-BLOCK-END\nx = 1\n# EVOLVE-BLOCK-START\n", "comes before"),
])
def test_bad_markers_raise_a_one_line_error_that_says_what_is_wrong(
        code: str, expected: str) -> None:
    with pytest.raises(EvolveBlockError) as caught:
        split_evolve_block(code)
    assert expected in str(caught.value)
    assert "\n" not in str(caught.value)
    assert isinstance(caught.value, ValueError)  # callers may catch ValueError


def test_an_edit_inside_the_block_is_accepted() -> None:
    child = PROGRAM.replace("-(bins - item)", "item - bins  # closer is better")
    check_edit_confined(PROGRAM, child)  # does not raise


def test_an_edit_before_the_block_is_rejected_with_the_first_changed_line() -> None:
    child = PROGRAM.replace("import numpy as np", "import numpy as np, os")
    with pytest.raises(EvolveBlockError, match="outside the EVOLVE-BLOCK: line 1: "
                                              "'import numpy as np' -> 'import numpy as np, os'"):
        check_edit_confined(PROGRAM, child)


def test_an_edit_after_the_block_is_rejected_with_the_parent_line_number() -> None:
    child = PROGRAM.replace("np.ones(3)", "np.ones(4)")
    with pytest.raises(EvolveBlockError, match="outside the EVOLVE-BLOCK: line 10: "):
        check_edit_confined(PROGRAM, child)


def test_whitespace_outside_the_block_counts_as_an_edit() -> None:
    with pytest.raises(EvolveBlockError, match="outside the EVOLVE-BLOCK: line 2"):
        check_edit_confined(PROGRAM, PROGRAM.replace("np\n\n#", "np\n  \n#"))


def test_a_child_that_loses_its_markers_is_rejected() -> None:
    child = PROGRAM.replace("# EVOLVE-BLOCK-END\n", "")
    with pytest.raises(EvolveBlockError, match="edit broke the EVOLVE-BLOCK markers"):
        check_edit_confined(PROGRAM, child)


def test_a_child_that_adds_a_second_block_is_rejected() -> None:
    child = PROGRAM.replace("    return -(bins - item)\n",
                            "    return -(bins - item)\n# EVOLVE-BLOCK-END\n# EVOLVE-BLOCK-START\n")
    with pytest.raises(EvolveBlockError):
        check_edit_confined(PROGRAM, child)
