"""The tree-growing GP operators (``grow``, ``hoist``) and the parts of a program that
no GP operator may touch: annotations, decorators, docstrings."""

from __future__ import annotations

import ast
import asyncio
import random
from dataclasses import fields
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from evoengine.config.llm_schema import GPConfig, GPOperatorWeights
from evoengine.mutation.evolve_block import split_evolve_block
from evoengine.mutation.gp_mutator import GPMutator
from evoengine.mutation.gp_operators import OPERATORS, OperatorContext, grow, hoist
from evoengine.mutation.gp_tree import nodes_with_slots
from evoengine.mutation.types import ParentView

PROBLEM_DIR = Path(__file__).resolve().parents[1] / "problems" / "bin_packing"
SEED = (PROBLEM_DIR / "initial.py").read_text()
VOCABULARY = [list(group) for group in
              OmegaConf.load(PROBLEM_DIR / "problem.yaml")["gp_vocabulary"]]
CONTEXT = OperatorContext(vocabulary=tuple(tuple(group) for group in VOCABULARY))
NICE = {0.5, 1, 2, 3, 10}

DECORATED = '''import numpy as np


# EVOLVE-BLOCK-START
@register(2, weight=0.5)
def priority(item: float, bins: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Score 0.5 per bin; the docstring is documentation, not code."""
    gap: np.ndarray = bins - item
    score: float = -gap * scale + np.log(bins) * 0.5
    return score
# EVOLVE-BLOCK-END
'''

DONOR = SEED.replace("return -(bins - item)",
                     "gap = bins - item\n    return np.exp(-gap / item) - 0.5 * gap")


def propose(mutator: GPMutator, code: str, seed: int, inspirations: tuple[str, ...] = ()):
    parent = ParentView(program_id=1, code=code, score=0.0)
    others = [ParentView(program_id=10 + i, code=other, score=0.0)
              for i, other in enumerate(inspirations)]
    return asyncio.run(mutator.propose(parent, others, "", random.Random(seed)))


def body(code: str) -> ast.Module:
    return ast.parse(split_evolve_block(code).body)


def returned(tree: ast.Module) -> ast.expr:
    return next(node.value for node in ast.walk(tree) if isinstance(node, ast.Return))


def protected_parts(tree: ast.Module) -> list[str]:
    """What GP must leave alone in each function: decorators, annotations, docstring."""
    parts = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            arguments = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
            parts += [ast.dump(d) for d in node.decorator_list]
            parts += [ast.dump(arg.annotation) for arg in arguments if arg.annotation]
            parts += [ast.dump(node.returns) if node.returns else "",
                      repr(ast.get_docstring(node, clean=False))]
    return parts


def annotations(tree: ast.Module) -> set[str]:
    """The annotations of annotated assignments (statements may move, repeat, vanish)."""
    return {ast.dump(node.annotation) for node in ast.walk(tree)
            if isinstance(node, ast.AnnAssign)}


def size(node: ast.AST) -> int:
    return sum(1 for _ in ast.walk(node))


def hoisted_back(child: ast.Module, parent: ast.Module) -> bool:
    """Whether replacing some node of ``child`` by one of its direct sub-expressions
    gives ``parent`` back, i.e. ``child`` is ``parent`` with one node wrapped."""
    target = ast.dump(parent)
    for node, slot in nodes_with_slots(child):
        for inner in ast.iter_child_nodes(node):
            if isinstance(inner, ast.expr):
                slot.put(inner)
                found = ast.dump(child) == target
                slot.put(node)
                if found:
                    return True
    return False


def constants(node: ast.AST) -> list[object]:
    return [c.value for c in ast.walk(node) if isinstance(c, ast.Constant)]


# --- grow --------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(40))
def test_grow_wraps_one_expression_in_one_new_node(seed: int) -> None:
    parent, child = body(SEED), body(SEED)
    description = grow(child, random.Random(seed), CONTEXT)
    assert description is not None and description.endswith(" at line 14")
    assert hoisted_back(child, parent)  # the original expression is still in there
    assert 0 < size(child) - size(parent) <= 7  # one new node and its leaves (ops included)
    ast.fix_missing_locations(child)
    assert ast.dump(ast.parse(ast.unparse(child))) == ast.dump(child)  # it parses back
    assert protected_parts(child) == protected_parts(parent)
    new_names = {n.id for n in ast.walk(returned(child)) if isinstance(n, ast.Name)}
    assert new_names <= {"bins", "item", "np", "max", "min"}
    for value in constants(returned(child)):
        assert value in NICE or (0.1 <= value <= 5.0 and round(value, 1) == value)


def test_grow_builds_many_different_expressions_from_the_vocabulary() -> None:
    grown = set()
    for seed in range(300):
        tree = body(SEED)
        grow(tree, random.Random(seed), CONTEXT)
        grown.add(ast.unparse(returned(tree)))
    assert len(grown) > 100
    assert {"np.log(-(bins - item))", "(bins - item) ** 2", "-(bins - item) * 2"} & grown
    assert any(text.startswith("np.maximum(") for text in grown)
    # np.maximum exists, so the builtin max (which fails on arrays) is not used
    assert not any(text.startswith(("max(", "min(")) for text in grown)
    assert not any("np.mean(" in text or "np.max(" in text for text in grown)  # reductions


def test_grow_offers_only_names_bound_before_the_expression() -> None:
    source = ("def f(x, label: str, rng: np.random.Generator):\n"
              "    y = x * 2\n    z = y + 1\n    return z\n")
    vocabulary_names = {"np", "max", "min"}
    allowed = [{"x"}, {"x", "y"}, {"x", "y", "z"}]
    for seed in range(200):
        tree = ast.parse(source)
        assert grow(tree, random.Random(seed), CONTEXT) is not None
        statements = tree.body[0].body
        for statement, names in zip(statements, allowed, strict=True):
            used = {n.id for n in ast.walk(statement.value) if isinstance(n, ast.Name)}
            assert used - vocabulary_names <= names, ast.unparse(statement)


def test_grow_turns_a_literal_into_a_term_not_into_constant_folding() -> None:
    for seed in range(50):
        tree = ast.parse("y = 0.5\n")
        assert grow(tree, random.Random(seed), CONTEXT) is None  # no name in scope
        tree = ast.parse("def f(x):\n    return 0.5\n")
        assert grow(tree, random.Random(seed), CONTEXT) is not None
        assert "x" in ast.unparse(tree.body[0].body[0])  # 0.5 * x, 0.5 - x, ...


def test_grow_leaves_conditions_iterables_indices_and_defaults_alone() -> None:
    source = "def f(x, w=2):\n    for i in range(3):\n        if x:\n            x = v[i].a\n"
    for seed in range(50):
        tree = ast.parse(source)
        assert grow(tree, random.Random(seed), CONTEXT) is not None
        text = ast.unparse(tree)
        assert "w=2):" in text and "in range(3):" in text and "if x:" in text
        assert "[i].a" in text  # the index is left alone (the indexed value may grow)


# --- hoist -------------------------------------------------------------------------


def test_hoist_replaces_an_expression_by_one_of_its_sub_expressions() -> None:
    source = "y = np.log(bins - item) * 2\n"
    results = set()
    for seed in range(200):
        tree = ast.parse(source)
        assert hoist(tree, random.Random(seed), CONTEXT) is not None
        assert size(tree) < size(ast.parse(source))
        results.add(ast.unparse(tree))
    assert results == {
        "y = np.log(bins - item)", "y = bins - item", "y = bins", "y = item",  # whole
        "y = (bins - item) * 2", "y = bins * 2", "y = item * 2",  # the call
        "y = np.log(bins) * 2", "y = np.log(item) * 2",  # the difference
    }


def test_hoist_needs_a_compound_expression() -> None:
    assert hoist(ast.parse("y = x\nz = -1\n"), random.Random(0), CONTEXT) is None
    tree = ast.parse("y = [v * 2 for v in xs]\nz = a[1:2] + b\n")
    for seed in range(30):  # neither comprehension variables nor slices escape
        candidate = ast.parse(ast.unparse(tree))
        if hoist(candidate, random.Random(seed), CONTEXT) is not None:
            text = ast.unparse(candidate)
            assert "y = v" not in text and "z = 1:2" not in text


# --- nothing touches annotations, decorators or docstrings ---------------------------


@pytest.mark.parametrize("name", list(OPERATORS))
def test_no_operator_edits_annotations_decorators_or_docstrings(name: str) -> None:
    parent = body(DECORATED)
    donor = body(DECORATED.replace("bins - item", "np.sqrt(bins) / item"))
    context = OperatorContext(vocabulary=CONTEXT.vocabulary, donor=donor)
    for seed in range(60):
        child = body(DECORATED)
        if OPERATORS[name](child, random.Random(seed), context) is None:
            continue
        assert protected_parts(child) == protected_parts(parent)
        assert annotations(child) <= annotations(parent) | annotations(donor)
        defaults = child.body[0].args.defaults
        assert all(isinstance(d, ast.Constant) for d in defaults)  # no names at def time


def test_children_of_the_bin_packing_seed_keep_signature_and_docstring() -> None:
    mutator = GPMutator(GPConfig(), VOCABULARY)
    parent = protected_parts(body(SEED))
    operators = set()
    for seed in range(300):
        child = propose(mutator, SEED, seed, (DONOR,))
        assert child is not None
        compile(child.code, "child.py", "exec")
        assert protected_parts(body(child.code)) == parent, child.edit
        operators.add(child.operator)
    assert {"gp:grow", "gp:hoist", "gp:crossover", "gp:swap_operator"} <= operators


def test_decorated_and_annotated_children_keep_signature_and_docstring() -> None:
    mutator = GPMutator(GPConfig(), VOCABULARY)
    parent = protected_parts(body(DECORATED))
    for seed in range(300):
        child = propose(mutator, DECORATED, seed)
        assert child is not None
        assert protected_parts(body(child.code)) == parent, child.edit
        assert annotations(body(child.code)) <= annotations(body(DECORATED))


# --- behaviour ---------------------------------------------------------------------


def test_the_minimal_bin_packing_seed_gets_many_distinct_children() -> None:
    """Before grow/hoist, the seed's only edit was swapping its ``-``: 4 children."""
    mutator = GPMutator(GPConfig(), VOCABULARY)
    children = [propose(mutator, SEED, seed) for seed in range(300)]
    assert all(child is not None for child in children)
    assert len({child.code for child in children}) > 30


def test_grow_and_hoist_can_be_switched_off() -> None:
    weights = {field.name: 1.0 for field in fields(GPOperatorWeights)}
    weights.update(grow=0.0, hoist=0.0)
    mutator = GPMutator(GPConfig(operators=GPOperatorWeights(**weights)), VOCABULARY)
    for seed in range(30):
        assert propose(mutator, SEED, seed).operator == "gp:swap_operator"
