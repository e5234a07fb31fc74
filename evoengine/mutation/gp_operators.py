"""Genetic-programming operators on the Python AST of an EVOLVE-BLOCK body.

Each operator is ``(tree, rng, context) -> str | None``: it changes ``tree`` in place
(the caller passes a private copy) and returns a short description of what it did, such
as ``"0.5 -> 0.61 at line 4"``, or ``None`` when the tree offers it nothing to work on.
Operators draw every random choice from ``rng`` and visit nodes in source order, so the
same tree and rng state always give the same edit.

This module holds the point mutations (constants, operators, calls) and the statement
operators, and registers every operator in ``OPERATORS``; subtree crossover lives in
``gp_crossover``, the tree-growing and -shrinking ``grow``/``hoist`` in ``gp_growth``,
and the shared traversal in ``gp_tree``.

The operators guarantee syntax, not meaning: a child may fail at run time, and the
evaluator records that. They do avoid edits that can only waste an evaluation: they
never touch annotations, decorators or docstrings, never delete or move
``def``/``class``/``import`` statements, never delete a function's fall-through or only
``return``, never duplicate a statement that ends control flow, and never leave a
statement list empty.

Not visited: the inside of f-strings and of ``match`` patterns, whose syntax accepts only
some expressions; the ``//``, ``%`` and bitwise operators (only ``+ - * / **`` swap).
"""

from __future__ import annotations

import ast
import copy
import math
import random

from evoengine.mutation.gp_crossover import crossover
from evoengine.mutation.gp_growth import grow, hoist
from evoengine.mutation.gp_tree import (
    Block,
    GPOperator,
    OperatorContext,
    Slot,
    at_line,
    dotted_expr,
    dotted_name,
    is_movable,
    is_number,
    nodes_with_slots,
    number_node,
    snippet,
    statement_blocks,
)

__all__ = ["OPERATORS", "GPOperator", "OperatorContext", "crossover", "delete_statement",
           "duplicate_statement", "grow", "hoist", "perturb_constant", "swap_call",
           "swap_operator", "swap_statements"]


# --- perturb_constant ------------------------------------------------------------


def _perturbed_int(value: int, sigma: float, rng: random.Random) -> int:
    """A new integer: a relative gaussian step, or +-1 where that step would round to 0."""
    if abs(value) < 1 / sigma:
        return value + rng.choice((-1, 1))
    per_million = round(rng.gauss(0.0, sigma) * 1_000_000)
    new = value + value * per_million // 1_000_000  # exact for integers of any size
    return new if new != value else value + rng.choice((-1, 1))


def _perturbed_float(value: float, sigma: float, rng: random.Random) -> float:
    """A new float, mostly ``value * (1 + N(0, sigma))``, sometimes ``value + N(0, sigma)``
    (which also moves 0.0), rounded to few significant digits so programs stay readable."""
    for _ in range(8):
        if value != 0.0 and rng.random() < 0.8:
            candidate = value * (1.0 + rng.gauss(0.0, sigma))
        else:
            candidate = value + rng.gauss(0.0, sigma)
        if not math.isfinite(candidate):
            continue
        for digits in (3, 6, 17):
            rounded = float(f"{candidate:.{digits}g}") + 0.0  # + 0.0 turns -0.0 into 0.0
            if rounded != value:
                return rounded
    return value  # the caller sees a no-op and tries again


def perturb_constant(tree: ast.Module, rng: random.Random, context: OperatorContext) -> str | None:
    """Move one int or float literal (a leading minus sign counts as part of it)."""
    negated: set[int] = set()  # ids of literals already taken as part of ``-literal``
    targets: list[tuple[ast.AST, Slot, int | float]] = []
    for node, slot in nodes_with_slots(tree):
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) \
                and is_number(node.operand):
            negated.add(id(node.operand))
            targets.append((node, slot, -node.operand.value))  # type: ignore[attr-defined]
        elif is_number(node) and id(node) not in negated:
            targets.append((node, slot, node.value))  # type: ignore[attr-defined]
    if not targets:
        return None
    node, slot, value = rng.choice(targets)
    if isinstance(value, int):
        new_value: int | float = _perturbed_int(value, context.constant_sigma, rng)
    else:
        new_value = _perturbed_float(value, context.constant_sigma, rng)
    slot.put(ast.copy_location(number_node(new_value), node))
    return f"{value!r} -> {new_value!r}{at_line(node, context)}"


# --- swap_operator ---------------------------------------------------------------

_OPERATOR_FAMILIES: tuple[tuple[type[ast.AST], ...], ...] = (
    (ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Eq, ast.NotEq),
    (ast.Is, ast.IsNot),
    (ast.In, ast.NotIn),
    (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow),
)
_SYMBOLS: dict[type[ast.AST], str] = {
    ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=",
    ast.Is: "is", ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in",
    ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**",
}


_FAMILY_OF = {kind: family for family in _OPERATOR_FAMILIES for kind in family}


def swap_operator(tree: ast.Module, rng: random.Random, context: OperatorContext) -> str | None:
    """Replace one comparison or arithmetic operator (``x += 1`` included) by another
    of its family: ``<`` by ``>=``, ``-`` by ``*``, ``is`` by ``is not``."""
    targets: list[tuple[ast.AST, Slot]] = []  # (operator, where it hangs)
    for node, _ in nodes_with_slots(tree):
        if isinstance(node, ast.Compare):
            targets.extend((op, Slot(node, "ops", i)) for i, op in enumerate(node.ops)
                           if type(op) in _FAMILY_OF)
        elif isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in _FAMILY_OF:
            targets.append((node.op, Slot(node, "op", None)))
    if not targets:
        return None
    old, slot = rng.choice(targets)
    new = rng.choice([kind for kind in _FAMILY_OF[type(old)] if kind is not type(old)])()
    slot.put(new)
    suffix = "=" if isinstance(slot.parent, ast.AugAssign) else ""
    return (f"{_SYMBOLS[type(old)]}{suffix} -> {_SYMBOLS[type(new)]}{suffix}"
            f"{at_line(slot.parent, context)}")


# --- swap_call -------------------------------------------------------------------


def swap_call(tree: ast.Module, rng: random.Random, context: OperatorContext) -> str | None:
    """Call another function of the same vocabulary group: ``np.log(x)`` -> ``np.sqrt(x)``.

    A name in several groups may become any member of any of them.
    """
    targets: list[tuple[ast.Call, str, list[str]]] = []
    for node, _ in nodes_with_slots(tree):
        if not isinstance(node, ast.Call):
            continue
        name = dotted_name(node.func)
        alternatives: list[str] = []
        for group in context.vocabulary:
            if name in group:
                alternatives.extend(o for o in group if o != name and o not in alternatives)
        if name is not None and alternatives:
            targets.append((node, name, alternatives))
    if not targets:
        return None
    call, old_name, alternatives = rng.choice(targets)
    new_name = rng.choice(alternatives)
    call.func = ast.copy_location(dotted_expr(new_name), call.func)
    return f"{old_name} -> {new_name}{at_line(call, context)}"


# --- statement operators ---------------------------------------------------------

_ENDS_FLOW = (ast.Return, ast.Raise, ast.Break, ast.Continue)


def _is_deletable(block: Block, index: int, returns: dict[int, int]) -> bool:
    statement = block.statements[index]
    if not is_movable(statement):
        return False
    if isinstance(statement, ast.Return):
        only_return = returns.get(id(block.owner), 0) <= 1
        falls_through = (block.statements is getattr(block.owner, "body", None)
                         and index == len(block.statements) - 1)
        return not (only_return or falls_through)
    return True


def delete_statement(tree: ast.Module, rng: random.Random, context: OperatorContext) -> str | None:
    """Remove one statement; a list that would become empty gets ``pass`` instead."""
    blocks, returns = statement_blocks(tree)
    targets = [(block, i) for block in blocks for i in range(len(block.statements))
               if _is_deletable(block, i, returns)]
    if not targets:
        return None
    block, index = rng.choice(targets)
    statement = block.statements[index]
    if len(block.statements) == 1:
        block.statements[0] = ast.copy_location(ast.Pass(), statement)
    else:
        del block.statements[index]
    return f"deleted `{snippet(statement)}`{at_line(statement, context)}"


def duplicate_statement(tree: ast.Module, rng: random.Random,
                        context: OperatorContext) -> str | None:
    """Repeat one statement right after itself (``x = x * 2`` twice, a loop twice)."""
    blocks, _ = statement_blocks(tree)
    targets = [(block, i) for block in blocks for i, s in enumerate(block.statements)
               if is_movable(s) and not isinstance(s, _ENDS_FLOW)]
    if not targets:
        return None
    block, index = rng.choice(targets)
    statement = block.statements[index]
    block.statements.insert(index + 1, copy.deepcopy(statement))
    return f"duplicated `{snippet(statement)}`{at_line(statement, context)}"


def swap_statements(tree: ast.Module, rng: random.Random, context: OperatorContext) -> str | None:
    """Exchange two different statements of the same statement list."""
    blocks, _ = statement_blocks(tree)
    targets: list[tuple[Block, int, int]] = []
    for block in blocks:
        movable = [i for i, s in enumerate(block.statements) if is_movable(s)]
        dumps = {i: ast.dump(block.statements[i]) for i in movable}
        targets.extend((block, i, j) for a, i in enumerate(movable) for j in movable[a + 1:]
                       if dumps[i] != dumps[j])
    if not targets:
        return None
    block, i, j = rng.choice(targets)
    first, second = block.statements[i], block.statements[j]
    block.statements[i], block.statements[j] = second, first
    return (f"swapped `{snippet(first)}`{at_line(first, context)} with "
            f"`{snippet(second)}`{at_line(second, context)}")


OPERATORS: dict[str, GPOperator] = {
    "perturb_constant": perturb_constant,
    "swap_operator": swap_operator,
    "swap_call": swap_call,
    "delete_statement": delete_statement,
    "duplicate_statement": duplicate_statement,
    "swap_statements": swap_statements,
    "crossover": crossover,
    "grow": grow,
    "hoist": hoist,
}
"""The operators by the names ``GPOperatorWeights`` weighs them under."""
