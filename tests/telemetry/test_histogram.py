import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.kernels import ExpHistogram
from tests.telemetry.twin import PyExpHistogram, map_index

values = st.floats(min_value=0.0, max_value=1e300, allow_nan=False, allow_infinity=False)


def _same(h, twin):
    off, counts = twin.dense()
    assert h.scale == twin.scale
    assert h.zero_count == twin.zero_count
    assert h.count == twin.count
    assert h.offset == off
    assert h.bucket_counts().tolist() == counts


@settings(max_examples=150, deadline=None)
@given(st.lists(values, max_size=200), st.integers(2, 40))
def test_matches_python_twin(xs, max_buckets):
    h, twin = ExpHistogram(max_buckets), PyExpHistogram(max_buckets)
    for x in xs:
        h.add(x)
        twin.add(x)
    _same(h, twin)


@pytest.mark.parametrize("scale", [-4, -1, 0, 1, 3, 8, 20])
@pytest.mark.parametrize("k", [-1070, -20, -1, 0, 1, 10, 1000])
def test_powers_of_two_are_upper_inclusive(scale, k):
    v = math.ldexp(1.0, k)
    h = ExpHistogram(160, max_scale=scale)
    h.add(v)
    idx = map_index(v, scale)
    assert h.offset == idx
    # bucket idx is (b**idx, b**(idx+1)]: v is its upper boundary
    assert idx == (k << scale) - 1 if scale > 0 else idx == (k - 1) >> -scale
    # v is a bucket boundary at this scale; denormal ulps are wider than a bucket
    if (scale > 0 or k % (1 << -scale) == 0) and k > -1022:
        h.add(math.nextafter(v, math.inf))
        assert h.offset + len(h.bucket_counts()) - 1 > idx
        h2 = ExpHistogram(160, max_scale=scale)
        h2.add(math.nextafter(v, 0.0))
        assert h2.offset == idx


@settings(max_examples=100, deadline=None)
@given(st.lists(values, max_size=100), st.lists(values, max_size=100),
       st.lists(values, max_size=100), st.integers(4, 40))
def test_merge_associative_and_equal_to_recording_all(a, b, c, nb):
    def make(xs):
        h = ExpHistogram(nb)
        for x in xs:
            h.add(x)
        return h

    left = make(a)
    left.merge(make(b))
    left.merge(make(c))
    bc = make(b)
    bc.merge(make(c))
    right = make(a)
    right.merge(bc)
    whole = make(a + b + c)
    for h in (left, right):
        assert h.scale == whole.scale
        assert h.offset == whole.offset
        assert h.bucket_counts().tolist() == whole.bucket_counts().tolist()
        assert (h.count, h.zero_count) == (whole.count, whole.zero_count)


def test_rejects_nan_negative_inf_and_counts_zero():
    h = ExpHistogram()
    for v in (math.nan, -1.0, math.inf, -math.inf, -1e-300):
        assert not h.add(v)
    assert h.invalid_count == 5 and h.count == 0
    assert h.add(0.0) and h.add(-0.0)
    assert h.zero_count == 2 and h.count == 2 and len(h.bucket_counts()) == 0


@pytest.mark.parametrize("dist", ["lognormal", "uniform", "denormal", "huge", "mixed"])
def test_quantiles_within_documented_bound(dist):
    rng = np.random.default_rng(7)
    x = {
        "lognormal": rng.lognormal(-7, 2, 20000),
        "uniform": rng.uniform(0, 1, 20000),
        "denormal": rng.uniform(1, 1000, 5000) * 5e-324,
        "huge": rng.uniform(1, 10, 5000) * 1e300,
        "mixed": np.concatenate([np.zeros(100), rng.lognormal(0, 30, 5000)]),
    }[dist]
    h = ExpHistogram()
    h.record_array(np.ascontiguousarray(x, dtype=np.float64))
    bound = h.relative_error() * (1 + 1e-9)
    xs = np.sort(x)
    for q in (0.0, 0.01, 0.25, 0.5, 0.9, 0.99, 0.999, 1.0):
        rank = max(1, math.ceil(q * len(xs)))
        true = xs[rank - 1]
        got = h.quantile(q)
        if true == 0:
            assert got == 0
        else:
            assert abs(got - true) / true <= bound, (q, got, true, h.scale)


def test_downscale_keeps_counts_and_fits():
    h = ExpHistogram(20)
    vals = [2.0 ** k for k in range(-30, 30)]
    for v in vals:
        h.add(v)
    assert len(h.bucket_counts()) <= 20
    assert int(h.bucket_counts().sum()) == len(vals)
    assert h.scale < 0
    assert h.min == vals[0] and h.max == vals[-1]


def _counts_at(snap, scale):
    """{index: count} (non-zero) of a snapshot's buckets re-bucketed to a lower ``scale``."""
    out = {}
    for i, n in enumerate(snap["bucket_counts"].tolist()):
        k = (snap["offset"] + i) >> (snap["scale"] - scale)
        if n:
            out[k] = out.get(k, 0) + n
    return out


def test_snapshots_carry_what_a_reader_needs_for_deltas():
    """The kernel keeps cumulative state only (no delta_snapshot): two snapshots are enough
    for a reader to difference them, across a downscale in between."""
    assert not hasattr(ExpHistogram(), "delta_snapshot")
    h = ExpHistogram(max_buckets=16)
    for v in (1.0, 2.0, 3.0):
        h.add(v)
    s1 = h.snapshot()
    assert set(s1) >= {"scale", "offset", "bucket_counts", "zero_count", "count", "sum",
                       "min", "max", "invalid_count"}
    assert s1["count"] == 3 and s1["min"] == 1.0 and s1["max"] == 3.0 and s1["sum"] == 6.0
    for v in (1e6, 1e-6, 0.0, -1.0):
        h.add(v)
    s2 = h.snapshot()
    assert s2["scale"] < s1["scale"]                 # the range forced a downscale
    assert s2["count"] - s1["count"] == 3 and s2["zero_count"] - s1["zero_count"] == 1
    assert s2["invalid_count"] - s1["invalid_count"] == 1
    assert s2["sum"] - s1["sum"] == pytest.approx(1e6 + 1e-6, rel=1e-15)
    assert s2["min"] == 0.0 and s2["max"] == 1e6     # zero is a value (min); -1 is not
    now, before = _counts_at(s2, s2["scale"]), _counts_at(s1, s2["scale"])
    delta = {k: n - before.get(k, 0) for k, n in now.items() if n - before.get(k, 0)}
    assert sum(delta.values()) == 2 and all(n > 0 for n in delta.values())
    alone = ExpHistogram(max_buckets=16, max_scale=s2["scale"])
    alone.add(1e6)
    alone.add(1e-6)
    assert _counts_at(alone.snapshot(), s2["scale"]) == delta
    s3 = h.snapshot()
    assert s3["count"] == s2["count"] and _counts_at(s3, s3["scale"]) == now
