"""The checks config dataclasses' ``validate()`` use, and the error they raise."""

from __future__ import annotations

from urllib.parse import urlsplit


class ConfigError(ValueError):
    """A one-line, user-facing configuration error."""


class ConfigValueError(ValueError):
    """A config value is out of range; ``key`` is its dotted path."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


def require(ok: bool, key: str, message: str) -> None:
    """Raise ``ConfigValueError(key, message)`` unless ``ok``."""
    if not ok:
        raise ConfigValueError(key, message)


def require_http_url(url: str | None, key: str) -> None:
    """``url`` unset (None or empty), or an http(s) URL with a host: any other can never
    be reached, so it is refused before a run starts rather than retried on every call."""
    if not url:
        return
    try:
        parts = urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:  # a malformed host such as an unclosed [IPv6 bracket
        ok = False
    require(ok, key, f"{url!r} is not an http(s) URL; give the server's address, e.g. "
                     "http://127.0.0.1:8000/v1")
