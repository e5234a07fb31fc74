"""Reused daemon threads for work that may never return (a problem's ``score()``).

``asyncio.to_thread`` runs on the default executor, whose threads the interpreter
joins at exit: one stuck call hangs the process for good, Ctrl-C included. A daemon
thread per call avoids that, but ``Thread.start`` waits until the new thread runs,
which blocked the event loop for about 1.6 ms per evaluation with every core busy
(8 evaluations at once on 2 cores). Here each call goes to an idle daemon thread, and
a new one starts only when none is idle; a thread whose call never returns is simply
never idle again.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable


class DaemonThreads:
    """Runs submitted calls on daemon threads, one call per thread at a time."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._calls: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self.started = 0  # threads started so far

    def submit(self, call: Callable[[], None]) -> None:
        """Run ``call`` (which must handle its own exceptions) on an idle thread, or on
        a new one when none is idle."""
        with self._lock:
            reuse = self._idle > 0
            if reuse:
                self._idle -= 1  # that thread is this call's
            else:
                self.started += 1
        self._calls.put(call)
        if not reuse:
            threading.Thread(target=self._serve, name=self.name, daemon=True).start()

    def _serve(self) -> None:
        while True:
            call = self._calls.get()
            # the call reports its own errors; this thread must live on for the next
            with contextlib.suppress(BaseException):
                call()
            with self._lock:
                self._idle += 1
