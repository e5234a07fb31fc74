"""Operators that change the size of an expression: ``grow`` inserts one new operator
node around an existing expression, ``hoist`` replaces an expression by one of its own
sub-expressions.

Point mutations alone cannot get a minimal seed such as ``return -(bins - item)`` far:
they can only swap its operator. ``grow`` builds new structure from the expression, a
"nice" constant, the names in scope there and the vocabulary's calls
(``(bins - item) * 2``, ``np.log(bins - item)``, ``max(item, 0.5)``); ``hoist`` counters
the bloat that repeated growth brings (``np.log(bins - item) * 2`` -> ``bins - item``).

Names in scope are the enclosing functions' parameters (less ``self``/``cls`` and those
annotated with a non-numeric type) and the names assigned before the expression, in
source order; names bound only inside a lambda or comprehension are not offered.
"""

from __future__ import annotations

import ast
import random

from evoengine.mutation.gp_tree import (
    FUNCTIONS,
    OperatorContext,
    Slot,
    at_line,
    dotted_expr,
    dotted_name,
    is_number,
    is_value_expr,
    nodes_with_slots,
    snippet,
)

_NICE_CONSTANTS = (0.5, 1, 2, 3, 10)
_NICE_FACTORS = (0.5, 2, 3, 10)  # for * and /, where 1 would change nothing
_POWERS = (2, 3)
_ARITHMETIC = (ast.Add, ast.Sub, ast.Mult, ast.Div)

# The last part of a dotted name (``np.log``) that computes elementwise from one value.
_ELEMENTWISE_UNARY = frozenset({
    "abs", "absolute", "fabs", "sqrt", "cbrt", "square", "exp", "exp2", "expm1", "log",
    "log2", "log10", "log1p", "sin", "cos", "tan", "arctan", "sinh", "cosh", "tanh",
    "arcsinh", "sign", "floor", "ceil", "round", "rint", "trunc", "fix", "reciprocal",
    "negative", "sigmoid", "expit", "relu", "erf",
})
_PAIRWISE_BUILTINS = frozenset({"max", "min"})
_PAIRWISE_ELEMENTWISE = frozenset({"maximum", "minimum", "fmax", "fmin"})
# Annotation names under which a parameter is offered as a number or array.
_NUMERIC_TYPES = frozenset({
    "Any", "int", "float", "complex", "Number", "Real", "ndarray", "NDArray", "ArrayLike",
    "Array", "Tensor", "number", "floating", "integer", "float16", "float32", "float64",
    "int8", "int16", "int32", "int64", "uint8",
})
_WRAPPERS = frozenset({"Optional", "Union", "Annotated", "Final"})

_GROWABLE = (ast.Name, ast.Constant, ast.UnaryOp, ast.BinOp, ast.Call, ast.Attribute,
             ast.Subscript, ast.IfExp)
# Slots where a value is used as something other than a number: an object whose
# attribute is read, an index, an iterable, a condition, a context manager, ...
_NOT_GROWN: tuple[tuple[type[ast.AST], tuple[str, ...]], ...] = (
    (ast.Attribute, ("value",)), (ast.If, ("test",)), (ast.While, ("test",)),
    (ast.IfExp, ("test",)), (ast.Assert, ("test",)), (ast.BoolOp, ("values",)),
    (ast.comprehension, ("ifs",)), (ast.keyword, ("value",)),  # axis=, dtype=, key=
)
# Slots where nothing inside is grown: indices and ranges want exact integers, and the
# rest are not numbers at all.
_NOT_GROWN_WITHIN: tuple[tuple[type[ast.AST], tuple[str, ...]], ...] = (
    (ast.Subscript, ("slice",)), (ast.For, ("iter",)), (ast.AsyncFor, ("iter",)),
    (ast.comprehension, ("iter",)), (ast.withitem, ("context_expr",)),
    (ast.ExceptHandler, ("type",)), (ast.Raise, ("exc", "cause")), (ast.Assert, ("msg",)),
    (ast.Dict, ("keys",)), (ast.ClassDef, ("bases", "keywords")),
)
_HOISTED_FROM = (ast.BinOp, ast.UnaryOp, ast.Call, ast.IfExp, ast.Subscript)
_OWN_SCOPE = (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


# --- names in scope -----------------------------------------------------------------


def _is_numeric_annotation(node: ast.expr | None) -> bool:
    if node is None:
        return True
    if isinstance(node, ast.Constant) and isinstance(node.value, str):  # "np.ndarray"
        try:
            return _is_numeric_annotation(ast.parse(node.value, mode="eval").body)
        except SyntaxError:
            return False
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):  # float | None
        return _is_numeric_annotation(node.left) or _is_numeric_annotation(node.right)
    if isinstance(node, ast.Subscript):  # Optional[float], NDArray[np.float64]
        head = (dotted_name(node.value) or "").rsplit(".", 1)[-1]
        if head in _WRAPPERS:
            inner = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
            return any(_is_numeric_annotation(item) for item in inner)
        return head in _NUMERIC_TYPES
    name = dotted_name(node)
    return name is not None and name.rsplit(".", 1)[-1] in _NUMERIC_TYPES


def _parameters(function: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    args = function.args
    return [arg.arg for arg in (*args.posonlyargs, *args.args, *args.kwonlyargs)
            if arg.arg not in ("self", "cls") and _is_numeric_annotation(arg.annotation)]


def _stored_names(target: ast.AST) -> list[str]:
    """Plain names a target binds (``a, (b, c) = ...``); starred ones hold lists."""
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, (ast.Tuple, ast.List)):
        return [name for element in target.elts for name in _stored_names(element)]
    return []


def _bound_by(statement: ast.AST, expressions: list[ast.AST]) -> list[str]:
    """The names ``statement`` binds for the statements after it (and its own body)."""
    targets: list[ast.AST] = []
    if isinstance(statement, ast.Assign):
        targets = list(statement.targets)
    elif isinstance(statement, (ast.For, ast.AsyncFor)) or (
            isinstance(statement, ast.AnnAssign) and statement.value is not None):
        targets = [statement.target]
    names = [name for target in targets for name in _stored_names(target)]
    names.extend(node.target.id for expression in expressions for node in ast.walk(expression)
                 if isinstance(node, ast.NamedExpr) and isinstance(node.target, ast.Name))
    return names


def _extend(names: list[str], new: list[str]) -> None:
    names.extend(name for name in dict.fromkeys(new) if name not in names)


def _names_in_scope(tree: ast.Module) -> dict[int, tuple[str, ...]]:
    """For each expression node's id, the names it may read, in order of binding."""
    scope: dict[int, tuple[str, ...]] = {}

    def record(expression: ast.AST, names: list[str]) -> None:
        snapshot = tuple(names)
        for node in ast.walk(expression):
            scope[id(node)] = snapshot

    def visit(node: ast.AST, names: list[str]) -> None:
        if isinstance(node, FUNCTIONS):
            record(node.args, names)
            inner = list(names)
            _extend(inner, _parameters(node))
            for statement in node.body:
                visit(statement, inner)
            return
        if isinstance(node, ast.ClassDef):  # class attributes are not seen by methods
            in_class = list(names)
            for statement in node.body:
                visit(statement, list(names) if isinstance(statement, FUNCTIONS) else in_class)
            return
        expressions: list[ast.AST] = []
        nested: list[ast.AST] = []
        for _, value in ast.iter_fields(node):
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, (ast.stmt, ast.excepthandler, ast.match_case)):
                    nested.append(item)
                elif isinstance(item, ast.AST):
                    expressions.append(item)
                    record(item, names)
        _extend(names, _bound_by(node, expressions))
        for child in nested:
            visit(child, names)

    visit(tree, [])
    return scope


# --- grow ----------------------------------------------------------------------------


def _is_literal(node: ast.AST) -> bool:
    return is_number(node) or (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub)
                               and is_number(node.operand))


def _in(slot: Slot, fields: tuple[tuple[type[ast.AST], tuple[str, ...]], ...]) -> bool:
    return any(isinstance(slot.parent, kind) and slot.field in names for kind, names in fields)


def _growable(tree: ast.Module) -> list[tuple[ast.expr, Slot]]:
    found: list[tuple[ast.expr, Slot]] = []
    left_out: set[int] = set()  # ids of nodes in a _NOT_GROWN_WITHIN subtree
    for node, slot in nodes_with_slots(tree, enter_defaults=False):  # parents come first
        if id(slot.parent) in left_out or _in(slot, _NOT_GROWN_WITHIN):
            left_out.add(id(node))
            continue
        if not (isinstance(node, _GROWABLE) and is_value_expr(node, slot)):
            continue
        if isinstance(node, ast.Constant) and not is_number(node):
            continue  # strings, booleans, None, ...
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            continue
        if isinstance(slot.parent, ast.UnaryOp) and isinstance(slot.parent.op, ast.Not):
            continue
        if _in(slot, _NOT_GROWN):
            continue
        found.append((node, slot))  # type: ignore[arg-type]
    return found


def _vocabulary_calls(vocabulary: tuple[tuple[str, ...], ...]) -> tuple[list[str], list[str]]:
    """The vocabulary's elementwise one-argument and two-argument call names, in order.

    Two-argument calls are ``np.maximum``-like ones where the vocabulary has them: they
    work on numbers and arrays alike, where the builtin ``max``/``min`` fail on arrays.
    """
    names = list(dict.fromkeys(name for group in vocabulary for name in group))
    unary = [name for name in names if name == "abs"
             or ("." in name and name.rsplit(".", 1)[-1] in _ELEMENTWISE_UNARY)]
    elementwise = [name for name in names
                   if "." in name and name.rsplit(".", 1)[-1] in _PAIRWISE_ELEMENTWISE]
    builtins = [name for name in names if name in _PAIRWISE_BUILTINS]
    return unary, elementwise or builtins


def _nice_constant(rng: random.Random, factor: bool) -> ast.expr:
    """A readable constant: mostly from a short list, else a uniform draw to one decimal.
    ``factor``: one to multiply or divide by, so never 1."""
    if rng.random() < 0.75:
        return ast.Constant(rng.choice(_NICE_FACTORS if factor else _NICE_CONSTANTS))
    value = round(rng.uniform(0.1, 5.0), 1)
    return ast.Constant(1.5 if factor and value == 1.0 else value)


def _name(name: str) -> ast.expr:
    return ast.Name(id=name, ctx=ast.Load())


def _grown(node: ast.expr, names: list[str], unary: list[str], pairwise: list[str],
           rng: random.Random) -> ast.expr:
    """``node`` inside one new operator node (a scaled name counts as one term)."""
    forms: list[str] = []
    literal = _is_literal(node)
    if not literal:
        forms += ["constant", "power"] + (["unary"] if unary else [])
        if not (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub)):
            forms.append("negate")
    if names:
        forms += ["name", "scaled_name"]
    if pairwise and (names or not literal):
        forms.append("pairwise")
    form = rng.choice(forms)
    if form in ("constant", "name"):
        op = rng.choice(_ARITHMETIC)()
        other = (_nice_constant(rng, isinstance(op, (ast.Mult, ast.Div))) if form == "constant"
                 else _name(rng.choice(names)))
        if isinstance(op, (ast.Sub, ast.Div)) and rng.random() < 0.3:
            return ast.BinOp(left=other, op=op, right=node)
        return ast.BinOp(left=node, op=op, right=other)
    if form == "scaled_name":
        term = ast.BinOp(left=_nice_constant(rng, True), op=ast.Mult(),
                         right=_name(rng.choice(names)))
        return ast.BinOp(left=node, op=rng.choice((ast.Add, ast.Sub))(), right=term)
    if form == "power":
        return ast.BinOp(left=node, op=ast.Pow(), right=ast.Constant(rng.choice(_POWERS)))
    if form == "negate":
        return ast.UnaryOp(op=ast.USub(), operand=node)
    if form == "unary":
        return ast.Call(func=dotted_expr(rng.choice(unary)), args=[node], keywords=[])
    function = dotted_expr(rng.choice(pairwise))  # "pairwise"
    use_name = bool(names) and (literal or rng.random() < 0.5)
    other = _name(rng.choice(names)) if use_name else _nice_constant(rng, False)
    return ast.Call(func=function, args=[node, other], keywords=[])


def grow(tree: ast.Module, rng: random.Random, context: OperatorContext) -> str | None:
    """Subtree insertion: wrap one expression ``e`` in a new operator node built from
    ``e``, a nice constant, a name in scope or a vocabulary call: ``e * 2``,
    ``e - 0.5 * item``, ``e / bins``, ``e ** 2``, ``-e``, ``np.log(e)``, ``max(e, 3)``.

    A literal is grown only with a name (``0.5 * item``), never into constant folding.
    Not grown: annotations, decorators, docstrings, argument defaults, called names,
    assignment targets, and values used as objects, indices, iterables or conditions.
    """
    scope = _names_in_scope(tree)
    unary, pairwise = _vocabulary_calls(context.vocabulary)
    targets: list[tuple[ast.expr, Slot, list[str]]] = []
    for node, slot in _growable(tree):
        names = [name for name in scope.get(id(node), ())
                 if not (isinstance(node, ast.Name) and node.id == name)]
        if names or not _is_literal(node):
            targets.append((node, slot, names))
    if not targets:
        return None
    node, slot, names = rng.choice(targets)
    before = snippet(node)
    grown = ast.copy_location(_grown(node, names, unary, pairwise, rng), node)
    slot.put(grown)
    return f"`{before}` -> `{snippet(grown)}`{at_line(grown, context)}"


# --- hoist ---------------------------------------------------------------------------


def _hoistable(node: ast.expr) -> list[ast.expr]:
    """Sub-expressions of ``node`` that can replace it: values (not literals, not called
    or module names, nothing valid only inside brackets), outside nested scopes."""
    nested = {id(inner) for scope in ast.walk(node) if isinstance(scope, _OWN_SCOPE)
              for inner in ast.walk(scope) if inner is not scope}
    found: list[ast.expr] = []
    for child, slot in nodes_with_slots(node):
        if id(child) in nested or not is_value_expr(child, slot) or _is_literal(child) \
                or isinstance(child, (ast.Constant, ast.NamedExpr, ast.Lambda)):
            continue
        if isinstance(slot.parent, ast.Attribute) and dotted_name(child) is not None:
            continue  # ``np`` of ``np.log``
        if any(isinstance(inner, (ast.Slice, ast.Starred)) for inner in ast.walk(child)):
            continue
        found.append(child)  # type: ignore[arg-type]
    return found


def hoist(tree: ast.Module, rng: random.Random, context: OperatorContext) -> str | None:
    """Replace a compound expression by one of its own sub-expressions:
    ``np.log(bins - item) * 2`` -> ``bins - item`` or ``bins``; shrinks what ``grow``
    and crossover have bloated."""
    targets: list[tuple[ast.expr, Slot, list[ast.expr]]] = []
    for node, slot in nodes_with_slots(tree):
        if isinstance(node, _HOISTED_FROM) and is_value_expr(node, slot):
            candidates = _hoistable(node)  # type: ignore[arg-type]
            if candidates:
                targets.append((node, slot, candidates))  # type: ignore[arg-type]
    if not targets:
        return None
    node, slot, candidates = rng.choice(targets)
    chosen = rng.choice(candidates)
    description = f"`{snippet(node)}` -> `{snippet(chosen)}`{at_line(node, context)}"
    slot.put(ast.copy_location(chosen, node))
    return description
