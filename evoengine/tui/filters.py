"""The program table's filter line, e.g. ``score>-4.5 island=1 op~grow error=none``.

Terms are separated by spaces and all must hold. Each term is FIELD OP VALUE with OP
one of ``= != > >= < <=`` and ``~`` (contains, for text fields). ``none`` matches a
missing value (``error=none``: programs without an error; ``val!=none``: programs with a
validation score). A term that cannot be read raises ``FilterError`` with the reason,
which the browser shows instead of applying the filter.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, true

from evoengine.archive.models import Program

#: filter field names (and their short forms) -> programs column
FIELDS: dict[str, Any] = {
    "id": Program.id, "score": Program.score, "val": Program.validation_score,
    "validation": Program.validation_score, "island": Program.island, "cell": Program.cell,
    "op": Program.operator, "operator": Program.operator, "model": Program.model,
    "gen": Program.generation, "generation": Program.generation, "error": Program.error,
    "valid": Program.valid, "parent": Program.parent_id, "step": Program.step,
}
_NUMERIC = {"id", "score", "val", "validation", "island", "gen", "generation", "parent",
            "step"}
_TERM = re.compile(r"^([A-Za-z_]+)(!=|>=|<=|=|>|<|~)(.+)$")


class FilterError(ValueError):
    """A filter term that cannot be read; the message names it."""


def parse_filter(text: str) -> ColumnElement[bool]:
    """The SQL condition of a filter line (``true()`` for an empty line)."""
    conditions = [_term(term) for term in text.split()]
    return and_(true(), *conditions) if conditions else true()


def _term(term: str) -> ColumnElement[bool]:
    match = _TERM.match(term.strip())
    if match is None:
        raise FilterError(f"{term!r}: write FIELD OP VALUE, e.g. score>-4 or op~grow")
    name, op, raw = match.groups()
    name = name.lower()
    if name not in FIELDS:
        raise FilterError(f"{term!r}: unknown field {name!r}; one of "
                          + ", ".join(sorted(FIELDS)))
    column = FIELDS[name]
    if raw.lower() == "none":
        if op not in ("=", "!="):
            raise FilterError(f"{term!r}: only = and != compare with none")
        return column.is_(None) if op == "=" else column.isnot(None)
    if name == "valid":
        flag = raw.lower()
        if op not in ("=", "!=") or flag not in ("true", "false", "1", "0", "yes", "no"):
            raise FilterError(f"{term!r}: write valid=true or valid=false")
        wanted = flag in ("true", "1", "yes")
        return column.is_(wanted if op == "=" else not wanted)
    if op == "~":
        if name in _NUMERIC:
            raise FilterError(f"{term!r}: ~ (contains) is for text fields")
        return column.contains(raw, autoescape=True)
    value: Any = raw
    if name in _NUMERIC:
        try:
            value = float(raw) if name in ("score", "val", "validation") else int(raw)
        except ValueError as exc:
            raise FilterError(f"{term!r}: {raw!r} is not a number") from exc
    if op == "!=":  # a missing value differs from any given one
        return or_(column != value, column.is_(None))
    return {"=": column == value, ">": column > value,
            ">=": column >= value, "<": column < value, "<=": column <= value}[op]
