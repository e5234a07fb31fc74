"""The archive as it stood when Alembic took over: runs, programs, evaluations,
mutation_calls (with its ``adapter`` column) and llm_calls.

An archive created before Alembic by ``Base.metadata.create_all`` has exactly these
tables; :func:`evoengine.archive.schema_migrate.migrate` stamps it at this revision
instead of running it.

Revision ID: 0001_initial
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None


def _created_at() -> sa.Column:
    return sa.Column("created_at", sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("problem", sa.String(200), nullable=False),
        sa.Column("seed", sa.Integer, nullable=False),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("elapsed_s", sa.Float, nullable=False),
        sa.Column("cost", sa.Float, nullable=False),
        _created_at(),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "programs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("step", sa.Integer, nullable=True),
        sa.Column("island", sa.Integer, nullable=False),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("parent_id", sa.Integer, sa.ForeignKey("programs.id"), nullable=True),
        sa.Column("second_parent_id", sa.Integer, sa.ForeignKey("programs.id"),
                  nullable=True),
        sa.Column("operator", sa.String(64), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("code", sa.Text, nullable=False),
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.Column("valid", sa.Boolean, nullable=False),
        sa.Column("score", sa.Float, nullable=True),
        sa.Column("validation_score", sa.Float, nullable=True),
        sa.Column("error", sa.String(32), nullable=True),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("features", sa.JSON, nullable=False),
        sa.Column("cell", sa.String(64), nullable=True),
        sa.Column("feedback", sa.Text, nullable=False),
        _created_at(),
    )
    op.create_index("ix_programs_run_island_score", "programs", ["run_id", "island", "score"])
    op.create_index("ix_programs_run_step", "programs", ["run_id", "step"])
    op.create_index("ix_programs_parent", "programs", ["parent_id"])
    op.create_table(
        "evaluations",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("program_id", sa.Integer, sa.ForeignKey("programs.id"), nullable=False),
        sa.Column("split", sa.String(32), nullable=False),
        sa.Column("valid", sa.Boolean, nullable=False),
        sa.Column("score", sa.Float, nullable=True),
        sa.Column("error", sa.String(32), nullable=True),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("features", sa.JSON, nullable=False),
        sa.Column("feedback", sa.Text, nullable=False),
        sa.Column("wall_s", sa.Float, nullable=False),
        sa.Column("cpu_s", sa.Float, nullable=False),
        sa.Column("stage", sa.Integer, nullable=False),
        _created_at(),
    )
    op.create_index("ix_evaluations_program_id", "evaluations", ["program_id"])
    op.create_table(
        "mutation_calls",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("parent_id", sa.Integer, sa.ForeignKey("programs.id"), nullable=False),
        sa.Column("program_id", sa.Integer, sa.ForeignKey("programs.id"), nullable=True),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("operator", sa.String(64), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("adapter", sa.String(200), nullable=True),
        sa.Column("edit", sa.Text, nullable=False),
        sa.Column("prompt", sa.Text, nullable=False),
        sa.Column("response", sa.Text, nullable=False),
        sa.Column("prompt_tokens", sa.Integer, nullable=False),
        sa.Column("completion_tokens", sa.Integer, nullable=False),
        sa.Column("cost", sa.Float, nullable=False),
        sa.Column("latency_s", sa.Float, nullable=False),
        _created_at(),
    )
    op.create_index("ix_mutation_calls_run_step", "mutation_calls", ["run_id", "step"])
    op.create_table(
        "llm_calls",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("session", sa.Integer, nullable=False),
        sa.Column("step", sa.Integer, nullable=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("request", sa.JSON, nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("response", sa.Text, nullable=False),
        sa.Column("prompt_tokens", sa.Integer, nullable=False),
        sa.Column("completion_tokens", sa.Integer, nullable=False),
        sa.Column("cost", sa.Float, nullable=False),
        sa.Column("latency_s", sa.Float, nullable=False),
        sa.Column("error_kind", sa.String(32), nullable=True),
        sa.Column("error_message", sa.Text, nullable=False),
        _created_at(),
    )
    op.create_index("ix_llm_calls_run_hash", "llm_calls", ["run_id", "request_hash"])


def downgrade() -> None:
    for index, table in (("ix_llm_calls_run_hash", "llm_calls"),
                         ("ix_mutation_calls_run_step", "mutation_calls"),
                         ("ix_evaluations_program_id", "evaluations"),
                         ("ix_programs_parent", "programs"),
                         ("ix_programs_run_step", "programs"),
                         ("ix_programs_run_island_score", "programs")):
        op.drop_index(index, table_name=table)
    for table in ("llm_calls", "mutation_calls", "evaluations", "programs", "runs"):
        op.drop_table(table)
