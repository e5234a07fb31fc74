"""The one check every config dataclass's ``validate()`` uses, and the error it raises."""

from __future__ import annotations


class ConfigValueError(ValueError):
    """A config value is out of range; ``key`` is its dotted path."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


def require(ok: bool, key: str, message: str) -> None:
    """Raise ``ConfigValueError(key, message)`` unless ``ok``."""
    if not ok:
        raise ConfigValueError(key, message)
