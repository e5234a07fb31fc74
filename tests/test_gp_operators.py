"""The offline GP mutator: each operator does what it says, children always parse,
stay inside the EVOLVE-BLOCK, and are reproducible from the rng."""

from __future__ import annotations

import ast
import asyncio
import random
from collections.abc import Sequence
from dataclasses import fields

import pytest

from evoengine.config.llm_schema import GPConfig, GPOperatorWeights
from evoengine.mutation.evolve_block import (
    EvolveBlockError,
    check_edit_confined,
    split_evolve_block,
)
from evoengine.mutation.gp_mutator import GPMutator
from evoengine.mutation.gp_operators import (
    OPERATORS,
    OperatorContext,
    crossover,
    delete_statement,
    duplicate_statement,
    perturb_constant,
    swap_call,
    swap_operator,
    swap_statements,
)
from evoengine.mutation.types import Child, ParentView

VOCABULARY = [["np.log", "np.sqrt", "np.exp", "np.abs"], ["max", "min"],
              ["np.max", "np.min", "np.mean"]]

BEST_FIT = '''"""Online bin packing: the evolved priority picks a bin for each item."""
import numpy as np


# EVOLVE-BLOCK-START
def priority(item: float, bins: np.ndarray) -> np.ndarray:
    """Best fit: prefer the bin that the item fills most tightly."""
    return -(bins - item)
# EVOLVE-BLOCK-END


def choose_bin(item: float, bins: np.ndarray) -> int:
    return int(np.argmax(priority(item, bins)))
'''

TUNED = BEST_FIT.replace('''    return -(bins - item)
''', '''    # Penalise bins that would be left nearly empty.
    gap = bins - item
    scores = -gap * 1.5
    if item > 0.5:
        scores += np.log(bins + 1e-9)
    scores -= max(0.1, item) * -2
    return scores
''')

INSPIRATION = TUNED.replace("scores = -gap * 1.5", "scores = np.exp(-gap) / (gap + 1.0)")

CONTEXT = OperatorContext(constant_sigma=0.25,
                          vocabulary=tuple(tuple(group) for group in VOCABULARY))


def body_tree(code: str) -> ast.Module:
    return ast.parse(split_evolve_block(code).body)


def propose(mutator: GPMutator, parent_code: str, seed: int,
            inspirations: Sequence[str] = ()) -> Child | None:
    parent = ParentView(program_id=1, code=parent_code, score=0.5)
    others = [ParentView(program_id=10 + i, code=code, score=0.4)
              for i, code in enumerate(inspirations)]
    return asyncio.run(mutator.propose(parent, others, "", random.Random(seed)))


def only(operator: str, **config: float) -> GPMutator:
    weights = {field.name: 0.0 for field in fields(GPOperatorWeights)}
    weights[operator] = 1.0
    return GPMutator(GPConfig(operators=GPOperatorWeights(**weights), **config), VOCABULARY)


class _NumbersMasked(ast.NodeTransformer):
    """Replaces every number (a negative one included) by the same placeholder."""

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.AST:
        if isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
            return ast.Name(id="NUMBER", ctx=ast.Load())
        return self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        if type(node.value) in (int, float):
            return ast.Name(id="NUMBER", ctx=ast.Load())
        return node


def masked(tree: ast.Module) -> str:
    return ast.dump(_NumbersMasked().visit(ast.parse(ast.unparse(tree))))


def numbers(tree: ast.Module) -> list[float]:
    """Every number in the tree, ``-literal`` read as one negative number."""
    values, negated = [], set()
    for node in ast.walk(ast.parse(ast.unparse(tree))):
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) \
                and isinstance(node.operand, ast.Constant):
            values.append(-node.operand.value)
            negated.add(id(node.operand))
        elif isinstance(node, ast.Constant) and type(node.value) in (int, float) \
                and id(node) not in negated:
            values.append(node.value)
    return sorted(values)


# --- operators -------------------------------------------------------------------


def test_every_configurable_operator_exists() -> None:
    assert list(OPERATORS) == [field.name for field in fields(GPOperatorWeights)]


@pytest.mark.parametrize("seed", range(30))
def test_perturb_constant_changes_one_number_and_nothing_else(seed: int) -> None:
    parent = body_tree(TUNED)
    child = body_tree(TUNED)
    description = perturb_constant(child, random.Random(seed), CONTEXT)
    assert description is not None
    assert masked(child) == masked(parent)  # same structure once numbers are hidden
    before, after = numbers(parent), numbers(child)
    assert len(before) == len(after)
    assert before != after
    assert len(set(before) - set(after)) == 1  # exactly one value changed


def test_perturb_constant_handles_negative_literals_and_keeps_ints_ints() -> None:
    for seed in range(50):
        tree = ast.parse("threshold = -3\nweight = -0.3\n")
        perturb_constant(tree, random.Random(seed), CONTEXT)
        reparsed = ast.parse(ast.unparse(tree))
        threshold = ast.literal_eval(reparsed.body[0].value)
        weight = ast.literal_eval(reparsed.body[1].value)
        assert type(threshold) is int and type(weight) is float
        assert (threshold, weight) != (-3, -0.3)
        assert abs(threshold + 3) <= 1  # small ints move by one


def test_perturb_constant_leaves_bools_and_strings_alone() -> None:
    tree = ast.parse("flag = True\nname = 'x'\n")
    assert perturb_constant(tree, random.Random(0), CONTEXT) is None


def test_swap_operator_picks_another_operator_of_the_same_family() -> None:
    seen = set()
    for seed in range(40):
        tree = ast.parse("ok = a < b\ntotal += 1\n")
        assert swap_operator(tree, random.Random(seed), CONTEXT) is not None
        compare, augmented = tree.body[0].value, tree.body[1]
        seen.add((type(compare.ops[0]).__name__, type(augmented.op).__name__))
        assert type(compare.ops[0]) in (ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Eq, ast.NotEq)
        assert type(augmented.op) in (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow)
        assert (type(compare.ops[0]) is ast.Lt) != (type(augmented.op) is ast.Add)  # one moved
    assert len(seen) > 4


def test_swap_call_replaces_a_call_by_another_member_of_its_group() -> None:
    replacements = set()
    for seed in range(30):
        tree = ast.parse("y = np.log(x) + len(x)\n")
        description = swap_call(tree, random.Random(seed), CONTEXT)
        assert description is not None and description.startswith("np.log -> ")
        replacements.add(ast.unparse(tree.body[0].value.left.func))
        assert ast.unparse(tree.body[0].value.right) == "len(x)"  # not in the vocabulary
    assert replacements == {"np.sqrt", "np.exp", "np.abs"}


def test_swap_call_has_nothing_to_do_without_a_vocabulary_match() -> None:
    assert swap_call(ast.parse("y = len(x)\n"), random.Random(0), CONTEXT) is None


def test_delete_statement_never_empties_a_body_or_removes_the_only_return() -> None:
    assert delete_statement(body_tree(BEST_FIT), random.Random(0), CONTEXT) is None
    tree = ast.parse("def f(x):\n    if x:\n        x = 1\n    return x\n")
    assert delete_statement(tree, random.Random(0), CONTEXT) is not None
    assert ast.unparse(tree) == "def f(x):\n    if x:\n        pass\n    return x"


def test_duplicate_statement_repeats_a_statement_in_place() -> None:
    tree = ast.parse("def f(x):\n    x = x * 2\n    return x\n")
    assert duplicate_statement(tree, random.Random(0), CONTEXT) is not None
    assert ast.unparse(tree) == "def f(x):\n    x = x * 2\n    x = x * 2\n    return x"


def test_swap_statements_exchanges_two_statements_of_one_body() -> None:
    tree = ast.parse("def f(x):\n    x = x + 1\n    x = x * 2\n    return x\n")
    assert swap_statements(tree, random.Random(0), CONTEXT) is not None
    lines = ast.unparse(tree).splitlines()
    assert lines[0] == "def f(x):"
    assert sorted(lines[1:]) == sorted(["    x = x + 1", "    x = x * 2", "    return x"])
    assert lines[1:] != ["    x = x + 1", "    x = x * 2", "    return x"]


def test_crossover_grafts_a_subtree_the_parent_lacks_from_the_donor() -> None:
    donor = body_tree(INSPIRATION)
    donor_subtrees = {ast.dump(node) for node in ast.walk(donor)}
    parent_subtrees = {ast.dump(node) for node in ast.walk(body_tree(TUNED))}
    for seed in range(20):
        child = body_tree(TUNED)
        context = OperatorContext(donor=donor)
        assert crossover(child, random.Random(seed), context) is not None
        grafted = {ast.dump(node) for node in ast.walk(child)} - parent_subtrees
        assert grafted & donor_subtrees  # something new, and it came from the donor


# --- the mutator -----------------------------------------------------------------


def test_children_always_parse_and_stay_inside_the_block() -> None:
    mutator = GPMutator(GPConfig(), VOCABULARY)
    parent_block = split_evolve_block(TUNED)
    operators = set()
    for seed in range(300):
        child = propose(mutator, TUNED, seed, [INSPIRATION, BEST_FIT])
        assert child is not None
        compile(child.code, "child.py", "exec")  # the whole program is valid Python
        check_edit_confined(TUNED, child.code)
        block = split_evolve_block(child.code)
        assert (block.prefix, block.suffix) == (parent_block.prefix, parent_block.suffix)
        assert ast.dump(ast.parse(block.body)) != ast.dump(ast.parse(parent_block.body))
        assert child.model == "gp" and child.operator.startswith("gp:") and child.edit
        operators.add(child.operator)
    assert operators == {f"gp:{name}" for name in OPERATORS}


def test_the_best_fit_seed_gets_real_children() -> None:
    mutator = GPMutator(GPConfig(), VOCABULARY)
    swapped, operators = set(), set()
    for seed in range(60):
        child = propose(mutator, BEST_FIT, seed)
        assert child is not None
        operators.add(child.operator)
        if child.operator == "gp:swap_operator":
            swapped.add(split_evolve_block(child.code).body.splitlines()[-1])
    # The seed has no constants, calls or movable statements: only its operator can be
    # swapped, and its expression grown or hoisted.
    assert operators == {"gp:swap_operator", "gp:grow", "gp:hoist"}
    assert swapped == {"    return -(bins + item)", "    return -(bins * item)",
                       "    return -(bins / item)", "    return -bins ** item"}  # ** binds tighter


def test_the_same_rng_state_gives_the_same_child() -> None:
    mutator = GPMutator(GPConfig(), VOCABULARY)
    for seed in range(20):
        first = propose(mutator, TUNED, seed, [INSPIRATION])
        second = propose(mutator, TUNED, seed, [INSPIRATION])
        assert first == second


def test_different_seeds_give_different_children() -> None:
    mutator = GPMutator(GPConfig(), VOCABULARY)
    codes = {propose(mutator, TUNED, seed, [INSPIRATION]).code for seed in range(40)}
    assert len(codes) > 25


def test_the_global_random_state_is_not_used() -> None:
    mutator = GPMutator(GPConfig(), VOCABULARY)
    random.seed(1234)
    state = random.getstate()
    propose(mutator, TUNED, 0, [INSPIRATION])
    assert random.getstate() == state


def test_nothing_to_mutate_gives_none() -> None:
    program = ('# EVOLVE-BLOCK-START\ndef f(x: float = 0.5) -> float:\n'
               '    """Only a signature and a docstring, which GP leaves alone."""\n'
               '    pass\n# EVOLVE-BLOCK-END\n')
    weights = {field.name: 1.0 for field in fields(GPOperatorWeights)}
    weights["perturb_constant"] = 0.0  # which would tune the default value
    mutator = GPMutator(GPConfig(operators=GPOperatorWeights(**weights)), VOCABULARY)
    for seed in range(5):
        assert propose(mutator, program, seed) is None


def test_crossover_records_the_second_parent_and_takes_donor_code() -> None:
    child = propose(only("crossover"), TUNED, 3, [INSPIRATION])
    assert child is not None and child.operator == "gp:crossover"
    assert child.second_parent_id == 10
    assert child.edit.startswith("crossover with program 10: ")


def test_crossover_needs_an_inspiration_that_differs_beyond_comments() -> None:
    same_code = TUNED.replace("# Penalise bins", "# Different comment, same code; bins")
    mutator = only("crossover")
    assert propose(mutator, TUNED, 0) is None
    assert propose(mutator, TUNED, 0, [TUNED, same_code]) is None
    child = propose(GPMutator(GPConfig(), VOCABULARY), BEST_FIT, 0, [BEST_FIT])
    assert child is not None and child.second_parent_id is None  # fell back to another operator


def test_edit_descriptions_name_the_change_and_the_file_line() -> None:
    child = propose(only("perturb_constant"), "x = 0\n# EVOLVE-BLOCK-START\n"
                    "w = 0.5\n# EVOLVE-BLOCK-END\n", 0)
    assert child is not None
    assert child.edit.startswith("perturb_constant: 0.5 -> ")
    assert child.edit.endswith(" at line 3")


def test_an_indented_block_keeps_its_indentation_and_surroundings() -> None:
    program = ("class Policy:\n    # EVOLVE-BLOCK-START\n    # weights\n"
               "    def score(self, x):\n        return x * 0.5\n"
               "    # EVOLVE-BLOCK-END\n\n    def act(self, x):\n        return self.score(x)\n")
    for seed in range(20):
        child = propose(GPMutator(GPConfig(), VOCABULARY), program, seed)
        assert child is not None
        check_edit_confined(program, child.code)
        body = split_evolve_block(child.code).body
        assert body.startswith("    # weights\n    def score(self, x):\n        return ")
        compile(child.code, "child.py", "exec")


def test_a_parent_without_markers_is_a_setup_error() -> None:
    with pytest.raises(EvolveBlockError, match="no EVOLVE-BLOCK markers"):
        propose(GPMutator(GPConfig(), VOCABULARY), "x = 1\n", 0)


def test_a_malformed_vocabulary_name_is_reported_at_construction() -> None:
    with pytest.raises(ValueError, match=r"gp_vocabulary\[1\]: 'np.log\(' is not a dotted"):
        GPMutator(GPConfig(), [["max", "min"], ["np.log(", "np.exp"]])
