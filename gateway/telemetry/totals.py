"""Running totals of one version, folded from the drained records with the histograms: requests
by outcome and their end-to-end, queue and compute nanoseconds, answered rows, and model
executions per batch size (what the Open Inference Protocol's ModelStatistics reports).

Integers throughout (exact sums of nanoseconds, not of the histograms' float seconds). An
execution is known by its compute start time (every request it ran carries the same one): it
is counted once, at the first of its records folded. Its records are written within moments
of each other, so they come in the same drain or the next; the start times of the last two
folds are kept to recognise those that straddle drains.
"""
from __future__ import annotations

import time

import numpy as np

from ..api.stats import BatchSizeTotal, PhaseTotal, VersionTotals

_KEPT_FOLDS = 2  # folds whose execution start times are kept (see the module docstring)


class RunningTotals:
    """Written by the aggregator under the hub's lock; read (:meth:`snapshot`) under it too."""

    def __init__(self) -> None:
        self.success = [0, 0]  # [count, ns]
        self.fail = [0, 0]
        self.queue = [0, 0]
        self.compute = [0, 0]
        self.rows = 0
        self.executions = 0
        self.batches: dict[int, list[int]] = {}  # batch size -> [executions, compute ns]
        self.last_responded_ns = 0  # time.monotonic_ns() of the last answer
        self._recent: list[np.ndarray] = []  # execution start times of the last folds

    def fold(self, ok: np.ndarray, e2e_ns: np.ndarray, queue_ns: np.ndarray, compute_ns: np.ndarray,
             ran: np.ndarray, rows: np.ndarray, starts: np.ndarray, batch_sizes: np.ndarray,
             responded_ns: np.ndarray) -> None:
        """One fold's records of this version (parallel arrays): ``ok`` the successful ones,
        ``ran`` those that reached an execution (its start time in ``starts``)."""
        n_ok = int(ok.sum())
        self.success[0] += n_ok
        self.success[1] += int(e2e_ns[ok].sum())
        self.fail[0] += len(ok) - n_ok
        self.fail[1] += int(e2e_ns[~ok].sum())
        self.rows += int(rows[ok].sum())
        timed = ok & ran
        self.queue[0] += int(timed.sum())
        self.queue[1] += int(queue_ns[timed].sum())
        self.compute[0] += int(timed.sum())
        self.compute[1] += int(compute_ns[timed].sum())
        if len(responded_ns):
            self.last_responded_ns = max(self.last_responded_ns, int(responded_ns.max()))
        if not ran.any():
            return
        run_starts, first = np.unique(starts[ran], return_index=True)
        fresh = np.ones(len(run_starts), dtype=bool)
        for earlier in self._recent:
            fresh &= ~np.isin(run_starts, earlier, assume_unique=True)
        self._recent = (self._recent + [run_starts])[-_KEPT_FOLDS:]
        if not fresh.any():
            return
        sizes = batch_sizes[ran][first][fresh]
        durations = compute_ns[ran][first][fresh]
        self.executions += int(fresh.sum())
        for size in np.unique(sizes).tolist():
            of_size = sizes == size
            entry = self.batches.setdefault(int(size), [0, 0])
            entry[0] += int(of_size.sum())
            entry[1] += int(durations[of_size].sum())

    def snapshot(self) -> VersionTotals:
        last_ms = 0
        if self.last_responded_ns:
            age_ns = time.monotonic_ns() - self.last_responded_ns
            last_ms = max(0, (time.time_ns() - age_ns) // 1_000_000)
        return VersionTotals(
            success=PhaseTotal(*self.success), fail=PhaseTotal(*self.fail), queue=PhaseTotal(*self.queue),
            compute=PhaseTotal(*self.compute), rows=self.rows, executions=self.executions,
            batches=tuple(BatchSizeTotal(size, n, ns) for size, (n, ns) in sorted(self.batches.items())),
            last_unix_ms=last_ms)
