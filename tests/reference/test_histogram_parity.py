"""Parity suite of the exponential histogram: ``gateway.kernels.ExpHistogram`` against the
twin ``tests.reference.histogram.ExpHistogram``, on the same cases (``impl``) and on
hypothesis-generated sequences of adds, array records, merges (other scales and bucket
limits, self-merges), copies, resets and quantiles with NaN, +/-inf, negative, zero and -0.0,
subnormal and huge values. The index mapping is checked against exact integer arithmetic.
"""
from __future__ import annotations

import math
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.kernels import ExpHistogram as NativeHistogram
from tests.reference.histogram import ExpHistogram as TwinHistogram
from tests.reference.histogram import lower_boundary, map_index
from tests.reference.impls import public

values = st.floats(min_value=0.0, max_value=1e300, allow_nan=False, allow_infinity=False)

_POW2 = [math.ldexp(1.0, e) for e in (-1074, -1073, -1022, -1000, -20, -1, 0, 1, 20, 1023)]
SPECIAL = sorted({*_POW2, *(math.nextafter(p, 0.0) for p in _POW2),
                  *(math.nextafter(p, math.inf) for p in _POW2),
                  0.0, 2.2250738585072009e-308, 1.7976931348623157e308, 1e-300, 1e300,
                  0.1, 0.3, 1.5, 3.0, 1e-9, 1e9}) + [-0.0, -1.0, -5e-324, math.nan,
                                                     -math.nan, math.inf, -math.inf]
# anything a caller can pass: adversarial constants, any double, small and huge spreads
adversarial = st.one_of(st.sampled_from(SPECIAL), st.floats(),
                        st.floats(min_value=0.0, max_value=1e-300),
                        st.floats(min_value=1e-3, max_value=1e3))
quantiles = st.one_of(st.sampled_from([0.0, -0.0, 1.0, 0.5, 0.99, 0.999, 1e-12, -1.0, 2.0,
                                       math.nan, math.inf, -math.inf]),
                      st.floats(0.0, 1.0))
bucket_limits = st.integers(2, 24)
scales = st.integers(-10, 20)


def _bits(x: float) -> str:
    """Exact identity of a double (sign of zero and NaN included)."""
    return struct.pack("<d", float(x)).hex()


def observe(h) -> dict:
    """Everything the public API tells about a histogram, floats as exact bits."""
    snap = h.snapshot()
    assert set(snap) == {"scale", "offset", "bucket_counts", "zero_count", "count", "sum",
                         "min", "max", "invalid_count"}
    assert snap["bucket_counts"].dtype == np.uint64
    return dict(
        snapshot={k: (v.tolist() if isinstance(v, np.ndarray) else
                      _bits(v) if isinstance(v, float) else v) for k, v in snap.items()},
        attrs=(h.scale, h.offset, h.count, h.zero_count, h.invalid_count, _bits(h.sum),
               _bits(h.min), _bits(h.max), h.max_buckets),
        buckets=h.bucket_counts().tolist(),
        relative_error=_bits(h.relative_error()),
    )


@st.composite
def histogram_specs(draw):
    """(max_buckets, max_scale, values) of a histogram to build."""
    return (draw(bucket_limits), draw(scales),
            draw(st.lists(adversarial, max_size=40)))


operations = st.lists(st.one_of(
    st.tuples(st.just("add"), adversarial),
    st.tuples(st.just("record_array"), st.lists(adversarial, max_size=40)),
    st.tuples(st.just("merge"), histogram_specs()),
    st.tuples(st.just("merge_self")),
    st.tuples(st.just("copy")),
    st.tuples(st.just("reset")),
    st.tuples(st.just("quantile"), quantiles),
), max_size=30)


def build(cls, spec):
    max_buckets, max_scale, xs = spec
    h = cls(max_buckets, max_scale)
    for x in xs:
        h.add(x)
    return h


def run(cls, spec, ops) -> list:
    """Apply ``ops`` to a histogram of class ``cls``; the trace of every observation."""
    h = build(cls, spec)
    trace = [observe(h)]
    for op, *args in ops:
        if op == "add":
            trace.append(h.add(args[0]))
        elif op == "record_array":
            h.record_array(np.array(args[0], dtype=np.float64))
        elif op == "merge":
            h.merge(build(cls, args[0]))
        elif op == "merge_self":
            h.merge(h)
        elif op == "copy":
            c = h.copy()
            trace.append(observe(c) == observe(h))
            h = c
        elif op == "reset":
            h.reset()
        elif op == "quantile":
            trace.append(_bits(h.quantile(args[0])))
        trace.append(observe(h))
    trace += [_bits(h.quantile(q)) for q in (0.0, 0.25, 0.5, 0.9, 0.99, 1.0)]
    return trace


@settings(max_examples=250, deadline=None)
@given(histogram_specs(), operations)
def test_native_equals_twin_on_random_operations(spec, ops):
    assert run(NativeHistogram, spec, ops) == run(TwinHistogram, spec, ops)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(SPECIAL), min_size=1, max_size=300), bucket_limits, scales)
def test_native_equals_twin_on_extremes_only(xs, max_buckets, max_scale):
    """Only boundary values (powers of two and their neighbours, subnormals, the largest
    double, NaN, infinities, -0.0): every add, as one array, and merged piecewise."""
    spec = (max_buckets, max_scale, [])
    ops = [("record_array", xs), ("merge", (max_buckets, max_scale, xs[::2])),
           ("merge", (2, -10, xs[1::3]))]
    assert run(NativeHistogram, spec, ops) == run(TwinHistogram, spec, ops)


@settings(max_examples=150, deadline=None)
@given(st.lists(values, max_size=200), st.integers(2, 40))
def test_matches_python_twin(xs, max_buckets):
    h, twin = NativeHistogram(max_buckets), TwinHistogram(max_buckets)
    for x in xs:
        h.add(x)
        twin.add(x)
    assert h.scale == twin.scale
    assert h.zero_count == twin.zero_count
    assert h.count == twin.count
    assert h.offset == twin.offset
    assert h.bucket_counts().tolist() == twin.bucket_counts().tolist()


def test_public_api_is_the_same():
    assert public(NativeHistogram) == public(TwinHistogram)


def test_api_errors_are_the_same(impl):
    with pytest.raises(ValueError):
        impl.ExpHistogram(1)
    with pytest.raises(ValueError):
        impl.ExpHistogram(160, 21)
    with pytest.raises(ValueError):
        impl.ExpHistogram(160, -11)
    h = impl.ExpHistogram()
    for bad in ("1", None, b"1"):
        with pytest.raises(TypeError):
            h.add(bad)
    with pytest.raises(TypeError):
        h.record_array([1.0, 2.0])                              # not a buffer
    for arr in (np.arange(4.0)[::2], np.ones(3, np.float32), np.ones((2, 2))):
        with pytest.raises(ValueError):
            h.record_array(arr)                                 # strided, float32, 2-D
    with pytest.raises(TypeError):
        h.merge(3)
    with pytest.raises(TypeError):
        h.merge(None)
    with pytest.raises(TypeError):
        h.quantile("0.5")
    assert h.count == 0 and h.invalid_count == 0
    for attr in ("scale", "count", "zero_count", "sum", "min", "max", "offset"):
        with pytest.raises(AttributeError):
            setattr(h, attr, 1)


@pytest.mark.parametrize("first, second", [(0.0, -0.0), (-0.0, 0.0)])
def test_min_and_max_keep_the_first_of_equal_values(impl, first, second):
    """-0.0 == 0.0: min and max change only on a strictly smaller / larger value."""
    h = impl.ExpHistogram()
    h.add(first)
    h.add(second)
    for x in (h.min, h.max, h.snapshot()["min"], h.snapshot()["max"]):
        assert math.copysign(1.0, x) == math.copysign(1.0, first)
    other = impl.ExpHistogram()
    other.add(second)
    other.merge(h)
    assert math.copysign(1.0, other.min) == math.copysign(1.0, second)


def test_read_only_arrays_are_recorded(impl):
    x = np.frombuffer(np.array([1.0, 0.0, -1.0, 8.0]).tobytes(), dtype=np.float64)
    assert not x.flags.writeable
    h = impl.ExpHistogram()
    h.record_array(x)
    assert (h.count, h.zero_count, h.invalid_count) == (3, 1, 1)


def test_empty_and_numbers(impl):
    h = impl.ExpHistogram()
    snap = h.snapshot()
    assert snap["count"] == 0 and len(snap["bucket_counts"]) == 0 and snap["offset"] == 0
    assert math.isnan(snap["min"]) and math.isnan(snap["max"]) and snap["sum"] == 0.0
    assert h.min == math.inf and h.max == -math.inf
    assert math.isnan(h.quantile(0.5))
    h.add(True)
    h.add(np.float32(2.5))
    h.add(3)
    assert h.count == 3 and h.sum == 6.5
    assert h.quantile(math.nan) != h.quantile(math.nan)
    snap = h.snapshot()
    snap["bucket_counts"][:] = 0                                # a copy, not a view
    assert h.bucket_counts().sum() == 3


# -- the cases of the former tests/telemetry/test_histogram.py, on both implementations ---


@pytest.mark.parametrize("scale", [-4, -1, 0, 1, 3, 8, 20])
@pytest.mark.parametrize("k", [-1070, -20, -1, 0, 1, 10, 1000])
def test_powers_of_two_are_upper_inclusive(impl, scale, k):
    v = math.ldexp(1.0, k)
    h = impl.ExpHistogram(160, max_scale=scale)
    h.add(v)
    idx = map_index(v, scale)
    assert h.offset == idx
    # bucket idx is (b**idx, b**(idx+1)]: v is its upper boundary
    assert idx == (k << scale) - 1 if scale > 0 else idx == (k - 1) >> -scale
    # v is a bucket boundary at this scale; denormal ulps are wider than a bucket
    if (scale > 0 or k % (1 << -scale) == 0) and k > -1022:
        h.add(math.nextafter(v, math.inf))
        assert h.offset + len(h.bucket_counts()) - 1 > idx
        h2 = impl.ExpHistogram(160, max_scale=scale)
        h2.add(math.nextafter(v, 0.0))
        assert h2.offset == idx


@settings(max_examples=100, deadline=None)
@given(st.lists(values, max_size=100), st.lists(values, max_size=100),
       st.lists(values, max_size=100), st.integers(4, 40),
       st.sampled_from([NativeHistogram, TwinHistogram]))
def test_merge_associative_and_equal_to_recording_all(a, b, c, nb, cls):
    def make(xs):
        h = cls(nb)
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


def test_rejects_nan_negative_inf_and_counts_zero(impl):
    h = impl.ExpHistogram()
    for v in (math.nan, -1.0, math.inf, -math.inf, -1e-300):
        assert not h.add(v)
    assert h.invalid_count == 5 and h.count == 0
    assert h.add(0.0) and h.add(-0.0)
    assert h.zero_count == 2 and h.count == 2 and len(h.bucket_counts()) == 0


@pytest.mark.parametrize("dist", ["lognormal", "uniform", "denormal", "huge", "mixed"])
def test_quantiles_within_documented_bound(impl, dist):
    rng = np.random.default_rng(7)
    x = {
        "lognormal": rng.lognormal(-7, 2, 20000),
        "uniform": rng.uniform(0, 1, 20000),
        "denormal": rng.uniform(1, 1000, 5000) * 5e-324,
        "huge": rng.uniform(1, 10, 5000) * 1e300,
        "mixed": np.concatenate([np.zeros(100), rng.lognormal(0, 30, 5000)]),
    }[dist]
    h = impl.ExpHistogram()
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


def test_downscale_keeps_counts_and_fits(impl):
    h = impl.ExpHistogram(20)
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


def test_snapshots_carry_what_a_reader_needs_for_deltas(impl):
    """The kernel keeps cumulative state only (no delta_snapshot): two snapshots are enough
    for a reader to difference them, across a downscale in between."""
    assert not hasattr(impl.ExpHistogram(), "delta_snapshot")
    h = impl.ExpHistogram(max_buckets=16)
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
    alone = impl.ExpHistogram(max_buckets=16, max_scale=s2["scale"])
    alone.add(1e6)
    alone.add(1e-6)
    assert _counts_at(alone.snapshot(), s2["scale"]) == delta
    s3 = h.snapshot()
    assert s3["count"] == s2["count"] and _counts_at(s3, s3["scale"]) == now


# -- the index mapping (former tests/telemetry/test_expmap_bits.py) -----------------------


def _mapping_values():
    rng = np.random.default_rng(11)
    bits = rng.integers(1, 0x7FF0000000000000, 3000, dtype=np.int64)   # all finite > 0
    vals = bits.view(np.float64).tolist()
    for e in (-1074, -1030, -1022, -1, 0, 1, 52, 1000, 1023):
        p = math.ldexp(1.0, e)
        vals += [p, math.nextafter(p, 0.0), math.nextafter(p, math.inf)]
    vals += [5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 1.0 + 2 ** -52]
    return [v for v in vals if 0.0 < v < math.inf]


@pytest.mark.parametrize("scale", [-10, -3, -1, 0, 1, 2, 3, 8, 14, 20])
def test_native_index_matches_reference(impl, scale):
    """The bit-level bucket mapping equals the frexp/log reference everywhere: normal and
    subnormal values, exact powers of two, their neighbours, every scale."""
    for v in _mapping_values():
        h = impl.ExpHistogram(max_buckets=2, max_scale=scale)
        h.add(v)
        assert h.scale == scale
        assert h.offset == map_index(v, scale), v


def exact_index(v: float, scale: int) -> int:
    """The true bucket index (b**i < v <= b**(i+1)) in integer arithmetic: with
    v = M * 2**K (M odd), v**(2**s) = M**(2**s) * 2**(K * 2**s)."""
    frac, e = math.frexp(v)
    m, k = int(math.ldexp(frac, 53)), e - 53
    while m % 2 == 0:
        m //= 2
        k += 1
    if scale <= 0:
        octave = k + m.bit_length() - 1 if m > 1 else k - 1     # 2**o < v <= 2**(o+1)
        return octave >> -scale
    p = 1 << scale
    return (m ** p).bit_length() - 1 + k * p if m > 1 else k * p - 1


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=5e-324, max_value=1.7976931348623157e308),
       st.integers(-10, 8), st.integers(-3, 3))
def test_index_is_exact_up_to_log_rounding(v, scale, near):
    """Against exact arithmetic: at scale <= 0 the index is exact; above, log rounding may
    put a value one bucket up, and only when it lies within a few ulps below a true bucket
    boundary. ``near`` moves the value onto a computed boundary and its neighbours."""
    if near and scale > 0:
        v = lower_boundary(map_index(v, scale) + 1, scale)
        for _ in range(abs(near)):
            v = math.nextafter(v, math.inf if near > 0 else 0.0)
        if not 0.0 < v < math.inf:
            return
    h = NativeHistogram(2, scale)
    h.add(v)
    exact = exact_index(v, scale)
    assert h.offset == map_index(v, scale)
    if scale <= 0:
        assert h.offset == exact
    else:
        assert h.offset in (exact, exact + 1)
        if h.offset == exact + 1:
            up = v
            for _ in range(4):
                up = math.nextafter(up, math.inf)
            assert exact_index(up, scale) == h.offset, (v, scale)
