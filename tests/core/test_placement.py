"""ExecutionPlace: when a model's next batch runs on the event loop and when on a worker thread."""
from __future__ import annotations

from gateway.core.placement import ExecutionPlace


def _place_after_warmup(limit_us: int, pool_us: float) -> ExecutionPlace:
    place = ExecutionPlace(limit_us)
    for _ in range(ExecutionPlace.WARMUP_EXECUTIONS):
        assert not place.inline_next(1)          # a fresh session's first runs go to the workers
        place.timed(50_000_000, inline=False, rows=1)   # and their (slow) times are not averaged
    assert place.pool_ns_avg is None
    assert not place.inline_next(1)
    place.timed(int(pool_us * 1000), inline=False, rows=1)
    return place


def test_execution_place_moves_a_fast_model_to_the_loop_and_keeps_it_there():
    place = _place_after_warmup(250, pool_us=120)
    for _ in range(200):
        assert place.inline_next(1)
        place.timed(60_000, inline=True, rows=1)
    place.timed(30_000_000, inline=True, rows=1)        # one 30 ms garbage collection: clipped
    assert place.inline_next(1)


def test_execution_place_leaves_the_loop_when_slow_and_probes_to_come_back():
    place = _place_after_warmup(250, pool_us=300)
    assert place.inline_next(1)                  # 300 us on a worker: worth timing on the loop
    for _ in range(30):                         # a run of slow executions moves it off
        place.timed(400_000, inline=True, rows=1)
    choices = [place.inline_next(1) for _ in range(3 * ExecutionPlace.PROBE_EVERY)]
    assert choices.count(True) == 3             # one probe every PROBE_EVERY batches
    assert choices.index(True) == ExecutionPlace.PROBE_EVERY - 1
    while place.inline_ns_avg >= place.limit_ns:  # the probes find it fast again
        while not place.inline_next(1):
            pass
        place.timed(100_000, inline=True, rows=1)
    assert all(place.inline_next(1) for _ in range(10))


def test_execution_place_never_probes_a_model_slow_even_on_the_workers():
    place = _place_after_warmup(250, pool_us=900)   # e.g. the wide MLP: ~0.9 ms per batch
    assert not any(place.inline_next(1) for _ in range(10 * ExecutionPlace.PROBE_EVERY))


def test_execution_place_zero_limit_is_never_inline():
    place = _place_after_warmup(0, pool_us=1)
    assert not any(place.inline_next(1) for _ in range(200))


def test_execution_place_sends_a_batch_far_larger_than_any_seen_fast_to_a_worker():
    place = _place_after_warmup(250, pool_us=40)       # rows=1 ran fast: up to 2 rows inline
    assert place.inline_next(2) and not place.inline_next(3)
    for rows in (2, 4, 8, 16):                         # larger batches prove fast: the size grows
        assert place.inline_next(rows)
        place.timed(30_000 + 5_000 * rows, inline=True, rows=rows)
    assert place.fast_rows == 16 and place.inline_next(32)
    assert not place.inline_next(100_000)              # one huge request: not on the loop
    place.timed(900_000, inline=False, rows=100_000)   # (and its slow run teaches nothing)
    assert place.fast_rows == 16 and place.inline_next(1)
