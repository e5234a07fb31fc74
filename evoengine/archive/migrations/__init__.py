"""Alembic migrations of the archive schema, shipped with the package and applied by
:func:`evoengine.archive.schema_migrate.migrate` whenever a store opens a database."""
