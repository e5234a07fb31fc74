"""The base of errors a user can cause and fix: ``evo`` prints them as one line."""

from __future__ import annotations


class UserError(ValueError):
    """Bad input or a missing prerequisite; the message says what to do next."""


def unwritable(exc: OSError, out: object) -> UserError:
    """The one-line error for an output file (``--out``) that cannot be written."""
    where = exc.filename or out
    return UserError(f"cannot write {where}: {exc.strerror or exc}; give --out a path in a "
                     "folder you can write to")
