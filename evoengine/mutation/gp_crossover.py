"""Subtree crossover: graft a piece of another program's block into the parent's."""

from __future__ import annotations

import ast
import copy
import random

from evoengine.mutation.gp_tree import (
    OperatorContext,
    Slot,
    at_line,
    is_movable,
    is_value_expr,
    nodes_with_slots,
    snippet,
    statement_blocks,
)


def _exchangeable(tree: ast.Module) -> list[tuple[ast.AST, Slot]]:
    """Value expressions and movable statements inside functions, with their slots.

    Argument defaults are left out: they run at ``def`` time, where a grafted
    expression's names (the function's parameters, say) do not exist yet.
    """
    inside_function: set[int] = set()
    for block in statement_blocks(tree)[0]:
        if block.owner is not tree:
            inside_function.update(id(s) for s in block.statements)
    return [(node, slot) for node, slot in nodes_with_slots(tree, enter_defaults=False)
            if is_value_expr(node, slot)
            or (id(node) in inside_function and is_movable(node))]  # type: ignore[arg-type]


def crossover(tree: ast.Module, rng: random.Random, context: OperatorContext) -> str | None:
    """Graft a subtree of the inspiration's block (``context.donor``) into the parent.

    An expression replaces an expression; a statement inside a function replaces a
    statement of the same kind (a ``return`` for a ``return``, an ``if`` for an ``if``).
    Donor subtrees that do not occur in the parent are preferred: they carry what the
    inspiration found that the parent lacks. Annotations, decorators and docstrings are
    neither replaced nor taken (see ``gp_tree``).
    """
    if context.donor is None:
        return None
    targets = _exchangeable(tree)
    target_dumps = [ast.dump(node) for node, _ in targets]
    present = set(target_dumps)
    donors = [node for node, _ in _exchangeable(context.donor)]
    novel = [node for node in donors if ast.dump(node) not in present]
    order = list(novel or donors)
    rng.shuffle(order)
    for donor_node in order:
        donor_dump = ast.dump(donor_node)
        is_expr = isinstance(donor_node, ast.expr)
        compatible = [
            (node, slot) for (node, slot), dump in zip(targets, target_dumps, strict=True)
            if dump != donor_dump
            and (isinstance(node, ast.expr) if is_expr else type(node) is type(donor_node))
        ]
        if compatible:
            node, slot = rng.choice(compatible)
            slot.put(ast.copy_location(copy.deepcopy(donor_node), node))
            return f"`{snippet(node)}` -> `{snippet(donor_node)}`{at_line(node, context)}"
    return None
