"""The base of errors a user can cause and fix: ``evo`` prints them as one line."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path


class UserError(ValueError):
    """Bad input or a missing prerequisite; the message says what to do next."""


def read_utf8(path: Path, error: Callable[[str], Exception], label: str | None = None) -> str:
    """The text of ``path``, or ``error(one line)`` saying why it cannot be read (not
    UTF-8, missing, no permission); ``label`` names it in that line (default: the path)."""
    shown = label or str(path)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{shown} is not UTF-8 text (byte {exc.start}); save it as "
                    "UTF-8") from exc
    except OSError as exc:
        raise error(f"{shown} cannot be read: {exc.strerror or exc}") from exc


def unwritable(exc: OSError, out: object) -> UserError:
    """The one-line error for an output file (``--out``) that cannot be written."""
    where = exc.filename or out
    return UserError(f"cannot write {where}: {exc.strerror or exc}; give --out a path in a "
                     "folder you can write to")


def first_line(exc: BaseException, limit: int | None = None) -> str:
    """The first line of ``exc``'s message (its type's name when it has none), cut to
    ``limit`` characters: what a one-line error quotes of an exception."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    return text if limit is None else text[:limit]


def causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions behind it (``__cause__``, else ``__context__``), each
    once: libraries wrap the error that says what happened in errors of their own."""
    seen: set[int] = set()
    cursor: BaseException | None = exc
    while cursor is not None and id(cursor) not in seen:
        seen.add(id(cursor))
        yield cursor
        cursor = cursor.__cause__ or cursor.__context__
