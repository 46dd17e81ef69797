"""Where a model's next batch runs: on the event loop, or on a worker thread."""
from __future__ import annotations


class ExecutionPlace:
    """Where a model's next batch runs: on the event loop, or on a worker thread.

    A model whose executions on the loop average less than ``inline_below_us`` of thread CPU
    time (observer included) runs there: for a model of tens of microseconds the hop to a
    worker thread and back costs more than the model. Each execution is timed where it ran;
    the averages skip a fresh session's first runs. One slow execution on the loop (a garbage
    collection, a page fault) is clipped so it cannot move the model off the loop; a run of
    them does. A model is first timed on the loop, and when found too slow there timed again
    every ``PROBE_EVERY`` batches, unless it takes twice the limit even on a worker thread: the
    same batch costs a worker more (cold caches, waits for the GIL), so a model timed only on
    the workers would never look fast enough to come back. A batch more than twice as large as
    any that has run within the limit (twice the limit on a worker) goes to a worker whatever
    the averages say, so one client's 100,000-row request to a fast model cannot stall the
    loop; the size allowed grows as larger batches prove fast. ``inline_below_us=0``: never
    inline.
    """

    WARMUP_EXECUTIONS = 3
    PROBE_EVERY = 64

    def __init__(self, inline_below_us: int):
        self.limit_ns = inline_below_us * 1000
        self.inline_ns_avg: float | None = None  # executions on the loop
        self.pool_ns_avg: float | None = None    # executions on worker threads
        self.fast_rows = 0  # the most rows a batch has had while running within the limit
        self._timed = 0
        self._since_probe = 0

    def inline_next(self, rows: int) -> bool:
        limit = self.limit_ns
        if not limit or self._timed <= self.WARMUP_EXECUTIONS or rows > 2 * self.fast_rows:
            return False
        inline = self.inline_ns_avg
        if inline is None:  # not timed on the loop yet: try it unless the workers found it slow
            return self.pool_ns_avg is not None and self.pool_ns_avg < 2 * limit
        if inline < limit:
            return True
        self._since_probe += 1
        if self._since_probe < self.PROBE_EVERY or (self.pool_ns_avg or 0) >= 2 * limit:
            return False
        self._since_probe = 0
        return True

    def timed(self, took_ns: int, inline: bool, rows: int) -> None:
        self._timed += 1
        # within the limit; on a worker, within twice the limit (its times run high, see above)
        if took_ns < (self.limit_ns if inline else 2 * self.limit_ns) and rows > self.fast_rows:
            self.fast_rows = rows
        if self._timed <= self.WARMUP_EXECUTIONS:
            return
        if inline:
            took_ns = min(took_ns, 2 * self.limit_ns)
            avg = self.inline_ns_avg
            self.inline_ns_avg = took_ns if avg is None else avg + (took_ns - avg) / 8
        else:
            avg = self.pool_ns_avg
            self.pool_ns_avg = took_ns if avg is None else avg + (took_ns - avg) / 8
