"""SQLAlchemy 2.x tables of the archive.

``programs`` holds every program the run made (evaluated or not: a failed child is a
row with ``valid`` false and no score); ``evaluations`` holds each sandbox run of a
program on a split; ``mutation_calls`` holds every proposal, including the ones that
produced nothing to evaluate; ``llm_calls`` holds every model request and its answer
(or error), which ``llm.replay`` plays back. Migrated elites and the seed's copies on other islands
are ``programs`` rows too, so replaying the rows in id order rebuilds the archive.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from evoengine.archive.storable import StorableText


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON}


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    problem: Mapped[str] = mapped_column(String(200))
    seed: Mapped[int] = mapped_column(Integer)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)  # the resolved RunConfig
    status: Mapped[str] = mapped_column(String(20), default="running")
    elapsed_s: Mapped[float] = mapped_column(Float, default=0.0)
    cost: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Program(Base):
    __tablename__ = "programs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"))
    step: Mapped[int | None] = mapped_column(Integer)  # the ask that produced it; None: copy
    island: Mapped[int] = mapped_column(Integer)
    generation: Mapped[int] = mapped_column(Integer)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("programs.id"))
    second_parent_id: Mapped[int | None] = mapped_column(ForeignKey("programs.id"))
    operator: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(200))
    code: Mapped[str] = mapped_column(StorableText)
    code_hash: Mapped[str] = mapped_column(String(64))
    valid: Mapped[bool] = mapped_column(Boolean)
    score: Mapped[float | None] = mapped_column(Float)
    validation_score: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(String(32))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    features: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    cell: Mapped[str | None] = mapped_column(String(64))  # "i,j" grid coordinates
    feedback: Mapped[str] = mapped_column(StorableText, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (
        Index("ix_programs_run_island_score", "run_id", "island", "score"),
        Index("ix_programs_run_step", "run_id", "step"),
        Index("ix_programs_parent", "parent_id"),
    )


class Evaluation(Base):
    __tablename__ = "evaluations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id"), index=True)
    split: Mapped[str] = mapped_column(String(32))
    valid: Mapped[bool] = mapped_column(Boolean)
    score: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(String(32))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    features: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    feedback: Mapped[str] = mapped_column(StorableText, default="")
    wall_s: Mapped[float] = mapped_column(Float, default=0.0)
    cpu_s: Mapped[float] = mapped_column(Float, default=0.0)
    stage: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class MutationCall(Base):
    __tablename__ = "mutation_calls"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"))
    step: Mapped[int] = mapped_column(Integer)
    parent_id: Mapped[int] = mapped_column(ForeignKey("programs.id"))
    program_id: Mapped[int | None] = mapped_column(ForeignKey("programs.id"))
    outcome: Mapped[str] = mapped_column(String(32))  # applied | noop | duplicate | rejected
    operator: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(200))
    adapter: Mapped[str | None] = mapped_column(String(200))  # LoRA adapter name, if any
    edit: Mapped[str] = mapped_column(StorableText, default="")
    prompt: Mapped[str] = mapped_column(StorableText, default="")
    response: Mapped[str] = mapped_column(StorableText, default="")
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost: Mapped[float] = mapped_column(Float, default=0.0)
    latency_s: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (Index("ix_mutation_calls_run_step", "run_id", "step"),)


class LLMCall(Base):
    """One model request and what came back: the record ``llm.replay`` plays back.

    ``request`` is what was asked (model, messages, temperature, max_tokens, seed);
    ``request_hash`` is the sha256 of its canonical JSON. ``session`` counts the
    ``evo run`` (0) and each ``evo resume`` after it: a killed run leaves the calls of
    its unfinished step behind, and the session that re-asks the step supersedes them.
    """

    __tablename__ = "llm_calls"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"))
    session: Mapped[int] = mapped_column(Integer, default=0)
    step: Mapped[int | None] = mapped_column(Integer)  # None: made outside a step
    model: Mapped[str] = mapped_column(String(200))
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    request_hash: Mapped[str] = mapped_column(String(64))
    response: Mapped[str] = mapped_column(StorableText, default="")
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost: Mapped[float] = mapped_column(Float, default=0.0)
    latency_s: Mapped[float] = mapped_column(Float, default=0.0)
    error_kind: Mapped[str | None] = mapped_column(String(32))  # an LLMError's kind
    error_message: Mapped[str] = mapped_column(StorableText, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (Index("ix_llm_calls_run_hash", "run_id", "request_hash"),)
