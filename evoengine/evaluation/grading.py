"""The jobs of one evaluation: the candidate's run and, for hidden-test problems,
the grader's (``problem.grader``).

With a grader, the candidate harness sees only the public view of each instance
(score.py's ``public_instance``: for HumanEval the prompt and entry point, never the
tests) and returns raw output (completions). A second sandbox call then runs the
grader harness, with the full instances, on that raw output, which reaches it as a
data module (``OUTPUT_JSON``, a JSON string) in place of a candidate; the host's
score.py scores what the grader returns. The candidate's own output is thus data to
the grader, never a score. Both runs hide the problem's ``data/`` folder, where the
hidden tests live, from the sandbox.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from evoengine.evaluation.problem import Problem, ProblemError
from evoengine.evaluation.sandbox.base import HarnessJob

GRADER_MODULE = "candidate_output"  # the data module the grader harness receives


class EvaluationJobs:
    """Builds the HarnessJobs of a problem's evaluations (one per split and size)."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        config = problem.config
        self.grader_path: Path | None = None
        self.hidden_dirs: tuple[str, ...] = ()
        if config.grader:
            self.grader_path = problem.folder / config.grader
            if not self.grader_path.is_file():
                raise ProblemError(f"{problem.folder}: the grader file {config.grader} "
                                   "is missing")
            if not callable(getattr(problem.scorer, "public_instance", None)):
                raise ProblemError(f"{problem.folder / config.scorer} must define "
                                   "public_instance(instance): with a grader, the "
                                   "candidate sees only the public part of each instance")
            data = problem.folder / "data"
            self.hidden_dirs = (str(data.resolve()),) if data.is_dir() else ()
        self._public: dict[str, list[Any]] = {}

    @property
    def graded(self) -> bool:
        return self.grader_path is not None

    def instances(self, split: str, count: int) -> list[Any]:
        """The first ``count`` full instances (what score.py scores against)."""
        return self.problem.instances(split)[:count]

    def candidate(self, split: str, count: int) -> HarnessJob:
        """The candidate's job on the first ``count`` instances of ``split``."""
        job = self.problem.job(split)
        total = len(self.problem.instances(split))
        if not self.graded and count == total:
            return job  # exactly what a problem without cascade or grader always ran
        if self.graded:
            if split not in self._public:
                view = self.problem.scorer.public_instance
                self._public[split] = [view(i) for i in self.problem.instances(split)]
            instances = self._public[split][:count]
        else:
            instances = job.instances[:count]
        return dataclasses.replace(job, key=f"{job.key}[:{count}]", instances=instances,
                                   hidden_dirs=self.hidden_dirs)

    def grader(self, split: str, count: int) -> HarnessJob:
        """The grader's job: the full instances, the raw output as its 'candidate'."""
        assert self.grader_path is not None
        return HarnessJob(key=f"{self.problem.folder}:{split}[:{count}]:grader",
                          harness_path=self.grader_path,
                          instances=self.instances(split, count), module_name=GRADER_MODULE,
                          preload=(), candidate_process=False, hidden_dirs=self.hidden_dirs)


def output_module(output: Any) -> str:
    """The candidate's raw output as the source of a data module for the grader."""
    return f"OUTPUT_JSON = {json.dumps(output)!r}\n"
