"""Genetic-programming operators on the Python AST of an EVOLVE-BLOCK body.

Each operator is ``(tree, rng, context) -> str | None``: it changes ``tree`` in place
(the caller passes a deep copy) and returns a short description of what it did, such
as ``"0.5 -> 0.61 at line 4"``, or ``None`` when the tree offers it nothing to work on.
Operators draw every random choice from ``rng`` and visit nodes in source order, so the
same tree and rng state always give the same edit.

The operators guarantee syntax, not meaning: a child may fail at run time, and the
evaluator records that. They do avoid edits that can only waste an evaluation: they
never delete or move ``def``/``class``/``import`` statements, never delete a function's
fall-through or only ``return``, never duplicate a statement that ends control flow,
and never leave a statement list empty.

Not visited: the inside of f-strings and of ``match`` patterns, whose syntax accepts only
some expressions; the ``//``, ``%`` and bitwise operators (only ``+ - * / **`` swap).
"""

from __future__ import annotations

import ast
import copy
import math
import random
from collections.abc import Callable
from dataclasses import dataclass

_SNIPPET_CHARS = 40


@dataclass(frozen=True)
class OperatorContext:
    """What operators may need beyond the tree and the rng."""

    constant_sigma: float = 0.25  # relative std-dev of a numeric perturbation
    vocabulary: tuple[tuple[str, ...], ...] = ()  # groups of interchangeable call names
    donor: ast.Module | None = None  # the inspiration's block body, for crossover
    line_offset: int = 0  # added to a node's line number to number lines as in the file


GPOperator = Callable[[ast.Module, random.Random, OperatorContext], "str | None"]


# --- traversal -------------------------------------------------------------------


@dataclass(frozen=True)
class _Slot:
    """Where a node hangs in its parent: ``parent.field`` or ``parent.field[index]``."""

    parent: ast.AST
    field: str
    index: int | None

    def put(self, node: ast.AST) -> None:
        if self.index is None:
            setattr(self.parent, self.field, node)
        else:
            getattr(self.parent, self.field)[self.index] = node


def _nodes_with_slots(tree: ast.AST) -> list[tuple[ast.AST, _Slot]]:
    """Every node below ``tree`` with its slot, parents before children, siblings in
    source order; deterministic, so an rng choice over it is reproducible.

    Does not enter f-strings or ``match`` patterns: their grammar is narrower than an
    expression's, so a node swapped in there may not unparse to valid code.
    """
    found: list[tuple[ast.AST, _Slot]] = []
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        children: list[tuple[ast.AST, _Slot]] = []
        for field, value in ast.iter_fields(node):
            if isinstance(value, list):
                children.extend((item, _Slot(node, field, index))
                                for index, item in enumerate(value) if isinstance(item, ast.AST))
            elif isinstance(value, ast.AST):
                children.append((value, _Slot(node, field, None)))
        found.extend(children)
        stack.extend(child for child, _ in reversed(children)
                     if not isinstance(child, (ast.JoinedStr, ast.pattern)))
    return found


def _snippet(node: ast.AST) -> str:
    text = ast.unparse(node).split("\n", 1)[0]
    return text if len(text) <= _SNIPPET_CHARS else text[: _SNIPPET_CHARS - 3] + "..."


def _at_line(node: ast.AST, context: OperatorContext) -> str:
    line = getattr(node, "lineno", None)
    return "" if line is None else f" at line {line + context.line_offset}"


# --- perturb_constant ------------------------------------------------------------


def _is_number(node: ast.AST) -> bool:
    """An int or finite float literal; bools, strings, complex and None are not tuned."""
    return isinstance(node, ast.Constant) and (
        type(node.value) is int or (type(node.value) is float and math.isfinite(node.value)))


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


def _number_node(value: int | float) -> ast.expr:
    """Negative numbers are ``-(literal)`` in Python source; build them that way so that
    unparsing keeps precedence right (``(-2) ** x``, not ``-2 ** x``)."""
    if value < 0:
        return ast.UnaryOp(op=ast.USub(), operand=ast.Constant(-value))
    return ast.Constant(value)


def perturb_constant(tree: ast.Module, rng: random.Random, context: OperatorContext) -> str | None:
    """Move one int or float literal (a leading minus sign counts as part of it)."""
    negated: set[int] = set()  # ids of literals already taken as part of ``-literal``
    targets: list[tuple[ast.AST, _Slot, int | float]] = []
    for node, slot in _nodes_with_slots(tree):
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) \
                and _is_number(node.operand):
            negated.add(id(node.operand))
            targets.append((node, slot, -node.operand.value))  # type: ignore[attr-defined]
        elif _is_number(node) and id(node) not in negated:
            targets.append((node, slot, node.value))  # type: ignore[attr-defined]
    if not targets:
        return None
    node, slot, value = rng.choice(targets)
    if isinstance(value, int):
        new_value: int | float = _perturbed_int(value, context.constant_sigma, rng)
    else:
        new_value = _perturbed_float(value, context.constant_sigma, rng)
    slot.put(ast.copy_location(_number_node(new_value), node))
    return f"{value!r} -> {new_value!r}{_at_line(node, context)}"


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
    targets: list[tuple[ast.AST, _Slot]] = []  # (operator, where it hangs)
    for node, _ in _nodes_with_slots(tree):
        if isinstance(node, ast.Compare):
            targets.extend((op, _Slot(node, "ops", i)) for i, op in enumerate(node.ops)
                           if type(op) in _FAMILY_OF)
        elif isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in _FAMILY_OF:
            targets.append((node.op, _Slot(node, "op", None)))
    if not targets:
        return None
    old, slot = rng.choice(targets)
    new = rng.choice([kind for kind in _FAMILY_OF[type(old)] if kind is not type(old)])()
    slot.put(new)
    suffix = "=" if isinstance(slot.parent, ast.AugAssign) else ""
    return (f"{_SYMBOLS[type(old)]}{suffix} -> {_SYMBOLS[type(new)]}{suffix}"
            f"{_at_line(slot.parent, context)}")


# --- swap_call -------------------------------------------------------------------


def dotted_name(node: ast.AST) -> str | None:
    """``np.log`` for ``Attribute(Name('np'), 'log')``; None for anything not a plain
    dotted name (``f()(x)``, ``a[0].b``)."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def _dotted_expr(name: str) -> ast.expr:
    first, *rest = name.split(".")
    expr: ast.expr = ast.Name(id=first, ctx=ast.Load())
    for attr in rest:
        expr = ast.Attribute(value=expr, attr=attr, ctx=ast.Load())
    return expr


def swap_call(tree: ast.Module, rng: random.Random, context: OperatorContext) -> str | None:
    """Call another function of the same vocabulary group: ``np.log(x)`` -> ``np.sqrt(x)``.

    A name in several groups may become any member of any of them.
    """
    targets: list[tuple[ast.Call, str, list[str]]] = []
    for node, _ in _nodes_with_slots(tree):
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
    call.func = ast.copy_location(_dotted_expr(new_name), call.func)
    return f"{old_name} -> {new_name}{_at_line(call, context)}"


# --- statement operators ---------------------------------------------------------

_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)
# Statements that give the program its shape; moving or removing them cannot help.
_FIXED = (*_FUNCTIONS, ast.ClassDef, ast.Import, ast.ImportFrom, ast.Global, ast.Nonlocal)
_ENDS_FLOW = (ast.Return, ast.Raise, ast.Break, ast.Continue)


@dataclass(frozen=True)
class _Block:
    """A statement list inside the tree (a body, an ``else``, a ``finally``, ...)."""

    statements: list[ast.stmt]
    owner: ast.AST  # the innermost enclosing function, or the module


def _blocks(tree: ast.Module) -> tuple[list[_Block], dict[int, int]]:
    """All statement lists in source order, and the number of returns per owner id."""
    blocks: list[_Block] = []
    returns: dict[int, int] = {}
    stack: list[tuple[ast.AST, ast.AST]] = [(tree, tree)]
    while stack:
        node, owner = stack.pop()
        if isinstance(node, ast.Return):
            returns[id(owner)] = returns.get(id(owner), 0) + 1
        inner = node if isinstance(node, _FUNCTIONS) else owner
        for _, value in ast.iter_fields(node):
            if isinstance(value, list) and value and all(isinstance(s, ast.stmt) for s in value):
                blocks.append(_Block(value, inner))
        stack.extend((child, inner) for child in reversed(list(ast.iter_child_nodes(node))))
    return blocks, returns


def _is_movable(statement: ast.stmt) -> bool:
    """Not structural and not inert (``pass``, a docstring, a bare ``...``)."""
    inert = isinstance(statement, ast.Pass) or (
        isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant))
    return not inert and not isinstance(statement, _FIXED)


def _is_deletable(block: _Block, index: int, returns: dict[int, int]) -> bool:
    statement = block.statements[index]
    if not _is_movable(statement):
        return False
    if isinstance(statement, ast.Return):
        only_return = returns.get(id(block.owner), 0) <= 1
        falls_through = (block.statements is getattr(block.owner, "body", None)
                         and index == len(block.statements) - 1)
        return not (only_return or falls_through)
    return True


def delete_statement(tree: ast.Module, rng: random.Random, context: OperatorContext) -> str | None:
    """Remove one statement; a list that would become empty gets ``pass`` instead."""
    blocks, returns = _blocks(tree)
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
    return f"deleted `{_snippet(statement)}`{_at_line(statement, context)}"


def duplicate_statement(tree: ast.Module, rng: random.Random,
                        context: OperatorContext) -> str | None:
    """Repeat one statement right after itself (``x = x * 2`` twice, a loop twice)."""
    blocks, _ = _blocks(tree)
    targets = [(block, i) for block in blocks for i, s in enumerate(block.statements)
               if _is_movable(s) and not isinstance(s, _ENDS_FLOW)]
    if not targets:
        return None
    block, index = rng.choice(targets)
    statement = block.statements[index]
    block.statements.insert(index + 1, copy.deepcopy(statement))
    return f"duplicated `{_snippet(statement)}`{_at_line(statement, context)}"


def swap_statements(tree: ast.Module, rng: random.Random, context: OperatorContext) -> str | None:
    """Exchange two different statements of the same statement list."""
    blocks, _ = _blocks(tree)
    targets: list[tuple[_Block, int, int]] = []
    for block in blocks:
        movable = [i for i, s in enumerate(block.statements) if _is_movable(s)]
        dumps = {i: ast.dump(block.statements[i]) for i in movable}
        targets.extend((block, i, j) for a, i in enumerate(movable) for j in movable[a + 1:]
                       if dumps[i] != dumps[j])
    if not targets:
        return None
    block, i, j = rng.choice(targets)
    first, second = block.statements[i], block.statements[j]
    block.statements[i], block.statements[j] = second, first
    return (f"swapped `{_snippet(first)}`{_at_line(first, context)} with "
            f"`{_snippet(second)}`{_at_line(second, context)}")


# --- crossover -------------------------------------------------------------------

_NOT_TRANSPLANTED = (ast.Slice, ast.Starred, ast.FormattedValue, ast.JoinedStr,
                     ast.Yield, ast.YieldFrom, ast.Await)


def _is_exchangeable_expr(node: ast.AST, slot: _Slot) -> bool:
    """An expression that can stand anywhere a value is read.

    Excluded: assignment targets, slices and starred items (valid only in some places),
    ``yield``/``await`` (change what a function is), called names (a function
    reference alone is rarely meaningful) and docstrings.
    """
    if not isinstance(node, ast.expr) or isinstance(node, _NOT_TRANSPLANTED):
        return False
    if not isinstance(getattr(node, "ctx", ast.Load()), ast.Load):
        return False
    if isinstance(slot.parent, ast.Call) and slot.field == "func":
        return False
    return not (isinstance(slot.parent, ast.Expr) and isinstance(node, ast.Constant))


def _exchangeable(tree: ast.Module) -> list[tuple[ast.AST, _Slot]]:
    """Expressions (see above) and movable statements inside functions, with slots."""
    inside_function: set[int] = set()
    for block in _blocks(tree)[0]:
        if block.owner is not tree:
            inside_function.update(id(s) for s in block.statements)
    return [(node, slot) for node, slot in _nodes_with_slots(tree)
            if _is_exchangeable_expr(node, slot)
            or (id(node) in inside_function and _is_movable(node))]  # type: ignore[arg-type]


def crossover(tree: ast.Module, rng: random.Random, context: OperatorContext) -> str | None:
    """Graft a subtree of the inspiration's block (``context.donor``) into the parent.

    An expression replaces an expression; a statement inside a function replaces a
    statement of the same kind (a ``return`` for a ``return``, an ``if`` for an ``if``).
    Donor subtrees that do not occur in the parent are preferred: they carry what the
    inspiration found that the parent lacks.
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
            return f"`{_snippet(node)}` -> `{_snippet(donor_node)}`{_at_line(node, context)}"
    return None


OPERATORS: dict[str, GPOperator] = {
    "perturb_constant": perturb_constant,
    "swap_operator": swap_operator,
    "swap_call": swap_call,
    "delete_statement": delete_statement,
    "duplicate_statement": duplicate_statement,
    "swap_statements": swap_statements,
    "crossover": crossover,
}
"""The operators by the names ``GPOperatorWeights`` weighs them under."""
