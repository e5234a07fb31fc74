"""evoengine/evaluation/daemon_threads.py: the scorer's threads are reused (starting
one per evaluation blocked the event loop), and a call that never returns costs one
thread, never the calls after it."""

from __future__ import annotations

import threading
import time

from evoengine.evaluation.daemon_threads import DaemonThreads


def _run(pool: DaemonThreads, call) -> None:
    done = threading.Event()

    def wrapped() -> None:
        try:
            call()
        finally:
            done.set()

    pool.submit(wrapped)
    assert done.wait(10)


def test_calls_in_turn_share_one_daemon_thread() -> None:
    pool = DaemonThreads("test-pool")
    names: list[tuple[str, bool]] = []
    for _ in range(20):
        _run(pool, lambda: names.append((threading.current_thread().name,
                                         threading.current_thread().daemon)))
        # the thread counts itself idle just after the call: wait for that
        for _ in range(1000):
            if pool._idle:
                break
            time.sleep(0.001)
    assert names == [("test-pool", True)] * 20
    assert pool.started == 1


def test_an_exception_or_exit_in_a_call_leaves_the_thread_serving() -> None:
    pool = DaemonThreads("test-pool")

    def fail() -> None:
        raise SystemExit(3)

    _run(pool, fail)
    seen: list[int] = []
    _run(pool, lambda: seen.append(1))
    assert seen == [1]


def test_a_call_that_never_returns_gets_its_thread_and_the_next_call_another() -> None:
    pool = DaemonThreads("test-pool")
    release = threading.Event()
    started = threading.Event()

    def stuck() -> None:
        started.set()
        release.wait()

    pool.submit(stuck)
    assert started.wait(10)
    seen: list[int] = []
    _run(pool, lambda: seen.append(1))  # not queued behind the stuck call
    assert seen == [1] and pool.started == 2
    release.set()
