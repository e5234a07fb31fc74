"""Where the engine finds its bundled resources (conf/, problems/, sandbox/), and the
name of a run folder's database.

In a source checkout (``pip install -e .``) they are the top-level folders of the
repository; in a wheel they are shipped under ``evoengine/_bundled``.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent
ARCHIVE_FILE = "archive.db"  # a run folder's SQLite archive (runs/<name>/archive.db)


def resource_dir(name: str) -> Path:
    """Return the folder ``name`` (``conf``, ``problems`` or ``sandbox``)."""
    checkout = _PACKAGE_DIR.parent / name
    if checkout.is_dir():
        return checkout
    return _PACKAGE_DIR / "_bundled" / name
