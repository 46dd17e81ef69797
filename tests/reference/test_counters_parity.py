"""Parity suite of the per-second counters: ``gateway.kernels.WindowedCounters`` against the
twin ``tests.reference.counters.WindowedCounters``, on the same cases (``impl``) and on
hypothesis sequences of events (in and out of order, older than the ring, negative times
skipped by ``add_arrays``, empty arrays) and queries (fractional, zero, negative, huge and
infinite windows; now from the latest event onward), compared exactly.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.kernels import WindowedCounters as NativeCounters
from tests.reference.counters import WindowedCounters as TwinCounters
from tests.reference.impls import public

S = 1_000_000_000
times = st.one_of(st.integers(0, 40 * S), st.integers(0, 40).map(lambda s: s * S),
                  st.integers(1, 40).map(lambda s: s * S - 1), st.integers(0, 2**62))
counts = st.integers(0, 1000)
windows = st.one_of(st.floats(0.0, 50.0), st.integers(0, 50).map(float),
                    st.sampled_from([1e-7, 0.999999, 1.0000001, -1.0, -math.inf, math.inf, math.nan,
                                     1e19, 1e300, 2**63, 5]))
operations = st.lists(st.one_of(
    st.tuples(st.just("increment"), times, counts, counts, counts, counts),
    st.tuples(st.just("arrays"), st.lists(st.tuples(
        st.one_of(times, st.integers(-5 * S, -1)), counts, counts, counts), max_size=20)),
    st.tuples(st.just("query"), windows, st.integers(0, 3 * S)),
), max_size=30)


def run(cls, slots, ops):
    c = cls(slots)
    latest = 0
    trace = []
    for op, *args in ops:
        if op == "increment":
            c.increment(*args)
            latest = max(latest, args[0])
        elif op == "arrays":
            cols = [np.array([e[i] for e in args[0]], dtype=np.int64) for i in range(4)]
            c.add_arrays(*cols)
            latest = max([latest] + [t for t, *_ in args[0]])
        else:
            window, ahead = args
            now = latest + ahead                     # the contract: now >= every event
            sums, covered = c.window_sums(window, now)
            assert sums.dtype == np.int64 and sums.shape == (4,)
            trace.append((sums.tolist(), covered, c.rates(window, now)))
        trace.append((c.totals(), c.total_requests, c.total_rows, c.total_errors,
                      c.total_degraded, c.slots))
    return trace


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 12), operations)
def test_native_equals_twin_on_random_operations(slots, ops):
    assert run(NativeCounters, slots, ops) == run(TwinCounters, slots, ops)


def test_public_api_is_the_same():
    assert public(NativeCounters) == public(TwinCounters)


def test_api_errors_are_the_same(impl):
    for bad in (0, -3):
        with pytest.raises(ValueError):
            impl.WindowedCounters(bad)
    c = impl.WindowedCounters(4)
    with pytest.raises(ValueError):
        c.increment(-1)
    one, two = np.zeros(1, np.int64), np.zeros(2, np.int64)
    with pytest.raises(ValueError):
        c.add_arrays(one, one, one, two)
    with pytest.raises(ValueError):
        c.add_arrays(np.zeros(1, np.int32), one, one, one)
    with pytest.raises(ValueError):
        c.add_arrays(np.zeros(4, np.int64)[::2], two, two, two)
    c.add_arrays(*(np.zeros(0, np.int64),) * 4)
    ro = np.frombuffer(np.array([S], np.int64).tobytes(), dtype=np.int64)
    c.add_arrays(ro, ro, ro, ro)                          # read-only arrays are fine
    assert c.totals() == (1, S, S, S)
    for attr in ("slots", "total_requests", "total_rows"):
        with pytest.raises(AttributeError):
            setattr(c, attr, 0)


def test_old_events_count_in_totals_only(impl):
    c = impl.WindowedCounters(5)
    c.increment(10 * S, 2)
    c.increment(3 * S, 7)                                 # 7 s before the latest: off the ring
    c.increment(6 * S, 1)                                 # inside the ring
    assert c.totals()[0] == 10
    assert c.window_sums(5, 10 * S)[0].tolist() == [3, 0, 0, 0]
    assert c.window_sums(1, 10 * S)[0].tolist() == [2, 0, 0, 0]
    assert c.window_sums(5, 10 * S)[1] == 5.0             # min(window, 7 s since the first)
    assert c.window_sums(5, 4 * S)[1] == 1.0               # at least 1 s


@pytest.mark.parametrize("window", [math.inf, 1e19, 2.0**63, 1e300])
def test_windows_past_the_ring_cover_the_ring(impl, window):
    """A window longer than the ring (inf included) is the whole ring, not one second (a
    double outside int64_t's range must not be converted)."""
    c = impl.WindowedCounters(10)
    for s in range(10):
        c.increment(s * S)
    assert c.window_sums(window, 9 * S)[0][0] == 10
    assert c.rates(window, 9 * S)[0] == pytest.approx(10 / 9)


# -- the case of the former tests/telemetry/test_kernels.py -------------------------------


def test_windowed_counters(impl):
    c = impl.WindowedCounters(60)
    t = np.arange(0, 100_000_000_000, 100_000_000, dtype=np.int64)   # 10/s for 100 s
    c.add_arrays(t, np.full_like(t, 2), (t % 3 == 0).astype(np.int64), np.zeros_like(t))
    now = int(t[-1])
    assert c.totals()[0] == len(t)
    rates = c.rates(10, now)
    assert rates[0] == pytest.approx(10.0) and rates[1] == pytest.approx(20.0)
    assert c.rates(1000, now)[0] == pytest.approx(10.0)   # clipped to the ring length
