"""The base of errors a user can cause and fix: ``evo`` prints them as one line."""

from __future__ import annotations


class UserError(ValueError):
    """Bad input or a missing prerequisite; the message says what to do next."""
