"""Read a run's proposals back from its archive, as conversations a model can learn from.

Every ``mutation_calls`` row is one proposal: the prompt and reply stored by the LLM
mutator, what became of it (``outcome``), and, when it was evaluated, the child's
``valid``/``score``/``error``. The prompt is stored as ``[system]\\n...\\n\\n[user]\\n...``
(:meth:`~evoengine.mutation.prompts.Prompt.as_text`); a diff retried after a SEARCH
block did not match has a second ``[user]`` turn and a reply with a ``[retry]`` part,
which become a multi-turn conversation whose last reply is the completion.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.orm import aliased

from evoengine.archive.models import MutationCall, Program, Run
from evoengine.archive.records import COPY_OPERATORS  # rows that repeat a program's score
from evoengine.archive.store import ArchiveStore, make_engine, sqlite_url
from evoengine.errors import UserError
from evoengine.paths import ARCHIVE_FILE

USER_MARK = "\n\n[user]\n"
RETRY_MARK = "\n\n[retry]\n"

Messages = list[dict[str, str]]


class SourceError(UserError):
    """The run to read cannot be opened."""


@dataclass(frozen=True)
class Attempt:
    """One proposal of the run and what became of it."""

    step: int
    messages: Messages  # the conversation up to the completion
    completion: str  # the model's (last) reply
    operator: str  # llm:diff | llm:full | llm:crossover
    outcome: str  # applied | noop | duplicate | unmatched | malformed | rejected | ...
    adapter: str | None
    parent_id: int
    parent_score: float | None
    parent_code: str
    child_id: int | None
    child_valid: bool | None
    child_score: float | None
    child_error: str | None

    @property
    def prompt_key(self) -> str:
        """Attempts with equal keys were asked exactly the same thing."""
        return json.dumps(self.messages, sort_keys=True)

    @property
    def edit_kind(self) -> str:
        return self.operator.split(":", 1)[-1]


@dataclass(frozen=True)
class RunArchive:
    """What the datasets need of a run: its proposals and its programs' scores."""

    name: str
    attempts: list[Attempt]
    scores: list[float]  # train scores of every valid evaluated program (no copies)
    evaluations: int


def conversation(prompt: str, response: str) -> tuple[Messages, str] | None:
    """The stored prompt and reply as (messages, completion); None when there is no
    model conversation (the offline GP mutator stores none) or it cannot be parsed."""
    if not prompt.startswith("[system]\n") or not response:
        return None
    head, *users = prompt[len("[system]\n"):].split(USER_MARK)
    replies = response.split(RETRY_MARK)
    if not users or len(users) != len(replies):
        return None
    messages: Messages = [{"role": "system", "content": head}]
    for index, user in enumerate(users):
        messages.append({"role": "user", "content": user})
        if index < len(replies) - 1:
            messages.append({"role": "assistant", "content": replies[index]})
    return messages, replies[-1]


def open_engine(source: str) -> Engine:
    """The database of ``source``: a run folder (``runs/<name>``) or a database URL."""
    if "://" in source:
        return make_engine(source, existing=True)
    db_path = Path(source).expanduser() / ARCHIVE_FILE
    if not db_path.is_file():
        raise SourceError(f"{source} holds no {ARCHIVE_FILE}; give the folder of a run "
                          "started with `evo run` (see runs/) or a database URL")
    return make_engine(sqlite_url(db_path), existing=True)


def open_run(source: str, name: str | None = None) -> tuple[ArchiveStore, Run]:
    try:
        return ArchiveStore.open_run(open_engine(source), name)
    except RuntimeError as exc:  # StoreError: no run / several runs
        raise SourceError(f"{source}: {exc}") from None


def iter_attempts(store: ArchiveStore) -> Iterator[Attempt]:
    """Every model proposal of the run in step order (GP proposals have no prompt)."""
    parent, child = aliased(Program), aliased(Program)
    query = (select(MutationCall.step, MutationCall.prompt, MutationCall.response,
                    MutationCall.operator, MutationCall.outcome, MutationCall.adapter,
                    parent.id, parent.score, parent.code, child.id, child.valid,
                    child.score, child.error)
             .join(parent, parent.id == MutationCall.parent_id)
             .outerjoin(child, child.id == MutationCall.program_id)
             .where(MutationCall.run_id == store.run_id, MutationCall.prompt != "")
             .order_by(MutationCall.step, MutationCall.id))
    with store.engine.connect() as conn:
        for row in conn.execution_options(yield_per=1000).execute(query):
            parsed = conversation(row[1], row[2])
            if parsed is None:
                continue
            yield Attempt(step=row[0], messages=parsed[0], completion=parsed[1],
                          operator=row[3], outcome=row[4], adapter=row[5], parent_id=row[6],
                          parent_score=row[7], parent_code=row[8], child_id=row[9],
                          child_valid=row[10], child_score=row[11], child_error=row[12])


def valid_scores(store: ArchiveStore) -> list[float]:
    query = select(Program.score).where(
        Program.run_id == store.run_id, Program.valid.is_(True), Program.score.is_not(None),
        Program.operator.not_in(COPY_OPERATORS))
    with store.engine.connect() as conn:
        return [float(score) for (score,) in conn.execute(query)]


def load_run(source: str, name: str | None = None) -> RunArchive:
    store, run = open_run(source, name)
    return RunArchive(name=run.name, attempts=list(iter_attempts(store)),
                      scores=valid_scores(store), evaluations=store.count_evaluations())
