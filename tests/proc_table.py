"""The process table read from /proc, for the tests and their support code
(``conftest.py``, ``ray_cluster.py``): the sandbox runner's own reader
(``sandbox/runner_reap.py``, stdlib only), loaded by path as the runner loads it."""

from __future__ import annotations

from evoengine.evaluation.problem import import_file
from evoengine.paths import resource_dir

_reap = import_file(resource_dir("sandbox") / "runner_reap.py", "tests_runner_reap")

ProcessRow = _reap.ProcessRow
process_table = _reap.process_table
descendants = _reap.descendants  # live (non-zombie) descendants of a pid: pid -> ppid
