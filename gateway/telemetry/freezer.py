"""Where the input statistics' quantile edges are frozen: one background thread for every model
version, so the execution threads never stall on it.

An input's statistics (``kernels.FeatureStats`` with ``defer_freeze``) buffer their first
``warmup_rows`` rows, then take bin edges from those rows' quantiles and bin them. For a wide
input that is a sort of millions of values: 0.3 s of one core for 1,024 rows of 4,096
features, a stall of every request queued behind the batch that filled the buffer. Here the
batch only queues the freeze; this thread takes the quantiles and bins the buffered rows. The
statistics keep buffering meanwhile (at most ``DEFER_MAX_FACTOR`` x ``warmup_rows`` rows, past
which the execution thread freezes them itself), and end the same as an inline freeze would.
Each statistics object is queued at most once at a time, so the queue is bounded by the inputs
of the versions loaded. On Linux the thread runs at the lowest CPU priority (nice 19, that
thread alone), so on a busy machine it takes the CPU the serving threads leave. It takes no
lock of theirs: the freeze set is handed to it and its result installed by the threads that
hold ``feature_lock`` anyway (``ModelTelemetry.adopt_frozen``), since a starved thread that
held that lock would stall the execution thread with it.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from ..runtime import affinity

log = logging.getLogger("gateway.telemetry")

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def submit(fn: Callable[..., None], *args) -> Future:
    """Run ``fn(*args)`` on the freezer thread (started on first use); an error is logged."""
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gateway-freeze", initializer=_lowest_priority)
        pool = _pool
    future = pool.submit(fn, *args)
    future.add_done_callback(_log_error)
    return future


NICE = 19  # the freezer thread's niceness (Linux)


def _lowest_priority() -> None:
    """This thread (not the process: on Linux a thread id is a task of its own) to nice 19, and
    off the execution CPUs (``execution_cpus``: an execution thread starts it)."""
    affinity.pin_front()
    if not sys.platform.startswith("linux"):
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)
    except OSError as exc:  # (a sandbox may refuse it: the freezes run at the normal priority)
        log.info("freezer thread keeps the normal CPU priority: %s", exc, extra={"event": "telemetry.freezer_priority"})


def _forget_in_child() -> None:  # a forked child has no freezer thread: it starts its own
    global _pool
    _pool = None


os.register_at_fork(after_in_child=_forget_in_child)


def _log_error(future: Future) -> None:
    exc = future.exception()
    if exc is not None:
        log.error("freezing input statistics' bin edges failed", exc_info=exc,
                  extra={"event": "telemetry.freeze_failed"})


def drain(timeout_s: float = 10.0) -> bool:
    """Wait until the freezes queued so far have run (False: not within ``timeout_s``). For a
    caller that steps time itself (tests, the bench), where the freezer's own pace would race."""
    with _lock:
        pool = _pool
    if pool is None:
        return True
    try:
        pool.submit(_nothing).result(timeout_s)
    except TimeoutError:
        return False
    return True


def _nothing() -> None:
    pass
