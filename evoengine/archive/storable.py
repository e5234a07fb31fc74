"""Text every store can hold.

Candidates, scorers and model servers can all produce a NUL or, through JSON, a lone
surrogate. Python holds both in a ``str``; PostgreSQL's text takes neither, and no
UTF-8 encoder (SQLite's, a hash's) takes a surrogate. :class:`StorableText` columns
replace them with U+FFFD as they are written, so a candidate that prints a NUL into
its own error message cannot stop a run on PostgreSQL, and both backends keep the
same text.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import Text
from sqlalchemy.types import TypeDecorator

# NUL, and surrogates (only lone ones reach a str: a JSON decoder joins the pairs)
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable_text(text: str) -> str:
    """``text`` with every lone surrogate and NUL replaced by U+FFFD (the same object
    when it has none)."""
    return _UNSTORABLE.sub("\ufffd", text) if _UNSTORABLE.search(text) else text


class StorableText(TypeDecorator[str]):
    """A ``Text`` column that stores :func:`storable_text` of what it is given."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        return storable_text(value) if isinstance(value, str) else value
