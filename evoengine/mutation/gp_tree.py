"""What every GP operator shares: the operator signature, a deterministic walk over the
nodes an operator may edit, and the statement lists of a block.

The walk leaves out what no operator may touch: type annotations (of arguments, of
return values, of annotated assignments), decorators, type parameters and docstrings.
Those are evaluated when the ``def`` runs or read by tools, so an edit there can only
break the program (``bins: (bins / item).ndarray`` fails at import) or hide its intent.
It also leaves out the inside of f-strings and ``match`` patterns, whose grammar is
narrower than an expression's.
"""

from __future__ import annotations

import ast
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
class Slot:
    """Where a node hangs in its parent: ``parent.field`` or ``parent.field[index]``."""

    parent: ast.AST
    field: str
    index: int | None

    def put(self, node: ast.AST) -> None:
        if self.index is None:
            setattr(self.parent, self.field, node)
        else:
            getattr(self.parent, self.field)[self.index] = node


FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)
_DEFINITIONS = (*FUNCTIONS, ast.ClassDef)
# (node type, field) pairs whose contents no operator edits or reads as material.
_PROTECTED_FIELDS: tuple[tuple[type[ast.AST], str], ...] = (
    (ast.arg, "annotation"),
    (ast.AnnAssign, "annotation"),
    *((kind, "decorator_list") for kind in _DEFINITIONS),
    *((kind, "returns") for kind in FUNCTIONS),
    *((kind, "type_params") for kind in _DEFINITIONS),  # Python >= 3.12
)
_DEFAULTS_FIELDS = ("defaults", "kw_defaults")  # of ast.arguments; evaluated at ``def``


def is_docstring(node: ast.AST, slot: Slot) -> bool:
    """The first statement of a module, class or function body, if it is a string."""
    return (slot.field == "body" and slot.index == 0
            and isinstance(slot.parent, (ast.Module, *_DEFINITIONS))
            and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str))


def _is_protected(node: ast.AST, slot: Slot, enter_defaults: bool) -> bool:
    if any(isinstance(slot.parent, kind) and slot.field == field
           for kind, field in _PROTECTED_FIELDS):
        return True
    if not enter_defaults and isinstance(slot.parent, ast.arguments) \
            and slot.field in _DEFAULTS_FIELDS:
        return True
    return is_docstring(node, slot)


def nodes_with_slots(tree: ast.AST, *, enter_defaults: bool = True,
                     ) -> list[tuple[ast.AST, Slot]]:
    """Every editable node below ``tree`` with its slot, parents before children,
    siblings in source order; deterministic, so an rng choice over it is reproducible.

    Leaves out protected subtrees (see the module docstring) and, unless
    ``enter_defaults``, argument default values: they are evaluated when the ``def``
    runs, where the function's own names are not defined yet. Does not enter f-strings
    or ``match`` patterns: a node swapped in there may not unparse to valid code.
    """
    found: list[tuple[ast.AST, Slot]] = []
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        children: list[tuple[ast.AST, Slot]] = []
        for field, value in ast.iter_fields(node):
            if isinstance(value, list):
                children.extend((item, Slot(node, field, index))
                                for index, item in enumerate(value) if isinstance(item, ast.AST))
            elif isinstance(value, ast.AST):
                children.append((value, Slot(node, field, None)))
        children = [(child, slot) for child, slot in children
                    if not _is_protected(child, slot, enter_defaults)]
        found.extend(children)
        stack.extend(child for child, _ in reversed(children)
                     if not isinstance(child, (ast.JoinedStr, ast.pattern)))
    return found


def snippet(node: ast.AST) -> str:
    """The first line of ``node``'s source, shortened for an edit description."""
    text = ast.unparse(node).split("\n", 1)[0]
    return text if len(text) <= _SNIPPET_CHARS else text[: _SNIPPET_CHARS - 3] + "..."


def at_line(node: ast.AST, context: OperatorContext) -> str:
    """`` at line N`` with N the file's line number, or "" for a node without one."""
    line = getattr(node, "lineno", None)
    return "" if line is None else f" at line {line + context.line_offset}"


# --- numbers and names -------------------------------------------------------------


def is_number(node: ast.AST) -> bool:
    """An int or finite float literal; bools, strings, complex and None are not tuned."""
    return isinstance(node, ast.Constant) and (
        type(node.value) is int or (type(node.value) is float and math.isfinite(node.value)))


def number_node(value: int | float) -> ast.expr:
    """Negative numbers are ``-(literal)`` in Python source; build them that way so that
    unparsing keeps precedence right (``(-2) ** x``, not ``-2 ** x``)."""
    if value < 0:
        return ast.UnaryOp(op=ast.USub(), operand=ast.Constant(-value))
    return ast.Constant(value)


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


def dotted_expr(name: str) -> ast.expr:
    """The expression for a dotted name: ``np.log`` -> ``Attribute(Name('np'), 'log')``."""
    first, *rest = name.split(".")
    expr: ast.expr = ast.Name(id=first, ctx=ast.Load())
    for attr in rest:
        expr = ast.Attribute(value=expr, attr=attr, ctx=ast.Load())
    return expr


# --- expressions that can be exchanged ------------------------------------------------

_NOT_TRANSPLANTED = (ast.Slice, ast.Starred, ast.FormattedValue, ast.JoinedStr,
                     ast.Yield, ast.YieldFrom, ast.Await)


def is_value_expr(node: ast.AST, slot: Slot) -> bool:
    """An expression whose value is read and that can stand anywhere a value is read.

    Excluded: assignment targets, slices and starred items (valid only in some places),
    ``yield``/``await`` (change what a function is), called names (a function
    reference alone is rarely meaningful) and constant expression statements.
    """
    if not isinstance(node, ast.expr) or isinstance(node, _NOT_TRANSPLANTED):
        return False
    if not isinstance(getattr(node, "ctx", ast.Load()), ast.Load):
        return False
    if isinstance(slot.parent, ast.Call) and slot.field == "func":
        return False
    return not (isinstance(slot.parent, ast.Expr) and isinstance(node, ast.Constant))


# --- statement lists -----------------------------------------------------------------

# Statements that give the program its shape; moving or removing them cannot help.
FIXED = (*FUNCTIONS, ast.ClassDef, ast.Import, ast.ImportFrom, ast.Global, ast.Nonlocal)


@dataclass(frozen=True)
class Block:
    """A statement list inside the tree (a body, an ``else``, a ``finally``, ...)."""

    statements: list[ast.stmt]
    owner: ast.AST  # the innermost enclosing function, or the module


def statement_blocks(tree: ast.Module) -> tuple[list[Block], dict[int, int]]:
    """All statement lists in source order, and the number of returns per owner id."""
    found: list[Block] = []
    returns: dict[int, int] = {}
    stack: list[tuple[ast.AST, ast.AST]] = [(tree, tree)]
    while stack:
        node, owner = stack.pop()
        if isinstance(node, ast.Return):
            returns[id(owner)] = returns.get(id(owner), 0) + 1
        inner = node if isinstance(node, FUNCTIONS) else owner
        for _, value in ast.iter_fields(node):
            if isinstance(value, list) and value and all(isinstance(s, ast.stmt) for s in value):
                found.append(Block(value, inner))
        stack.extend((child, inner) for child in reversed(list(ast.iter_child_nodes(node))))
    return found, returns


def is_movable(statement: ast.stmt) -> bool:
    """Not structural and not inert (``pass``, a docstring, a bare ``...``)."""
    inert = isinstance(statement, ast.Pass) or (
        isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant))
    return not inert and not isinstance(statement, FIXED)
