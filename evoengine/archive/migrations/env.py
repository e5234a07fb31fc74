"""Alembic environment of the archive schema.

Normally run by :func:`evoengine.archive.schema_migrate.migrate`, which hands over an
open connection in ``config.attributes["connection"]`` (so the migration shares the
caller's transaction and, on PostgreSQL, its advisory lock). Run by the ``alembic``
command for authoring a new revision, it connects to ``sqlalchemy.url`` itself.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from evoengine.archive.models import Base


def _migrate(connection) -> None:  # noqa: ANN001 - a SQLAlchemy Connection
    context.configure(connection=connection, target_metadata=Base.metadata,
                      render_as_batch=connection.dialect.name == "sqlite",
                      compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    _migrate(connection)
else:
    engine = create_engine(context.config.get_main_option("sqlalchemy.url"))
    with engine.begin() as fresh:
        _migrate(fresh)
    engine.dispose()
