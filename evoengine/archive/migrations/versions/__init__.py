"""Alembic revisions of the archive schema, oldest first by ``down_revision``."""
