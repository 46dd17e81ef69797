"""Running totals: exact integer sums per outcome and phase, executions counted once per batch
(also when a batch's records straddle drains), per batch size, read through the hub."""
from __future__ import annotations

import time

from gateway.telemetry import Telemetry
from tests.telemetry.records import record

MS = 1_000_000


def _batch(t: Telemetry, model_id: int, start_ns: int, sizes: list[int], *, status: int = 0) -> None:
    """One execution of len(sizes) requests (rows each), answered at once."""
    batch = sum(sizes)
    for rows in sizes:
        record(t, model_id, t_received_ns=start_ns - 3 * MS, t_enqueued_ns=start_ns - 2 * MS,
               t_batch_ns=start_ns - MS, t_compute_start_ns=start_ns, t_compute_end_ns=start_ns + 5 * MS,
               t_responded_ns=start_ns + 6 * MS, batch_size=batch, rows=rows, status=status)


def _totals(t: Telemetry):
    (snap,) = t.snapshot(1.0)
    assert snap.totals is not None
    return snap.totals


def test_totals_are_exact_and_agree_with_each_other():
    t = Telemetry()
    m = t.register_model("m", "1", inputs={})
    base = time.monotonic_ns()
    _batch(t, m, base, [1, 3])          # one execution of 4 rows (two requests)
    _batch(t, m, base + 10 * MS, [2])   # one of 2 rows
    record(t, m, t_received_ns=base, t_responded_ns=base + 7 * MS, status=3)  # refused before running
    record(t, m, t_received_ns=base, t_responded_ns=base + MS)                # answered without a run (cache)
    s = _totals(t)
    assert (s.success.count, s.success.ns) == (4, 3 * 9 * MS + MS)
    assert (s.fail.count, s.fail.ns) == (1, 7 * MS)
    assert (s.queue.count, s.queue.ns) == (3, 3 * 2 * MS)
    assert (s.compute.count, s.compute.ns) == (3, 3 * 5 * MS)
    assert s.rows == 1 + 3 + 2 + 1 and s.executions == 2
    assert [(b.batch_size, b.executions, b.compute_ns) for b in s.batches] == [(2, 1, 5 * MS), (4, 1, 5 * MS)]
    assert sum(b.executions for b in s.batches) == s.executions
    assert abs(s.last_unix_ms - time.time_ns() // MS) < 60_000


def test_an_execution_whose_records_straddle_drains_counts_once():
    t = Telemetry()
    m = t.register_model("m", "1", inputs={})
    base = time.monotonic_ns()
    record(t, m, t_enqueued_ns=base - MS, t_compute_start_ns=base, t_compute_end_ns=base + MS,
           t_responded_ns=base + 2 * MS, batch_size=3, rows=1)
    first = _totals(t)   # (a read drains the ring)
    record(t, m, t_enqueued_ns=base - MS, t_compute_start_ns=base, t_compute_end_ns=base + MS,
           t_responded_ns=base + 2 * MS, batch_size=3, rows=2)
    second = _totals(t)
    assert first.executions == second.executions == 1
    assert (first.rows, second.rows) == (1, 3)
    assert second.success.count == 2 and second.batches[0].executions == 1


def test_totals_only_grow_between_reads():
    t = Telemetry()
    m = t.register_model("m", "1", inputs={})
    base = time.monotonic_ns()
    before = _totals(t)
    for i in range(5):
        _batch(t, m, base + i * 10 * MS, [1, 1])
        after = _totals(t)
        assert after.success.count == before.success.count + 2 and after.executions == before.executions + 1
        assert after.compute.ns > before.compute.ns
        before = after
