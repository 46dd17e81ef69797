"""Parity suite of the input statistics: ``gateway.kernels.FeatureStats`` against the twin
``tests.reference.featurestats.FeatureStats``, on the same cases (``impl``) and on
hypothesis sessions: explicit edges (repeated, discrete, narrow, wide), uniform ranges,
quantile warm-up (discrete features with repeated quantile edges, constant features),
sampling, batches of every accepted dtype and layout with NaN, +/-inf, huge values whose
sums overflow, subnormal, zero and -0.0 values, empty batches, single rows, merges while
warming up and after, self-merges, copies and resets -- compared exactly.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gateway.kernels import FeatureStats as NativeStats
from tests.reference.featurestats import FeatureStats as TwinStats
from tests.reference.impls import public


_finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
_value = st.one_of(
    st.floats(-10.0, 10.0), st.integers(-3, 3).map(float), _finite,
    st.sampled_from([0.0, -0.0, np.nan, np.inf, -np.inf, 5e-324, -1e-310, 1e308, -1e308,
                     1.7976931348623157e308, 0.5, 1.0, 2.0]))
_DTYPES = [np.float64, np.float32, np.int64, np.int32, np.uint8, np.float16, np.bool_,
           ">f8"]


@st.composite
def configs(draw):
    """FeatureStats keyword arguments (and the feature count)."""
    nf = draw(st.integers(1, 4))
    kind = draw(st.sampled_from(["edges", "edges_per_feature", "uniform", "warmup"]))
    kw = dict(sample_every=draw(st.sampled_from([1, 1, 1, 2, 3])))
    if kind == "edges":
        levels = draw(st.sampled_from([st.integers(-3, 3).map(float), st.floats(-10, 10),
                                       _finite]))
        kw["edges"] = sorted(draw(st.lists(levels, min_size=2, max_size=9)))
    elif kind == "edges_per_feature":
        nb = draw(st.integers(1, 6))
        kw["edges"] = [sorted(draw(st.lists(st.floats(-5, 5), min_size=nb + 1,
                                            max_size=nb + 1))) for _ in range(nf)]
    elif kind == "uniform":
        lo = draw(st.one_of(st.floats(-10, 10), st.integers(-8, 4).map(float), _finite))
        hi = draw(st.one_of(st.floats(lo, lo + 20), _finite).filter(
            lambda h: h > lo and np.isfinite(h - lo)))
        kw["value_range"] = (lo, hi)
        kw["n_bins"] = draw(st.integers(1, 12))
    else:
        kw["warmup_rows"] = draw(st.integers(1, 12))
        kw["n_bins"] = draw(st.integers(1, 8))
    kw["defer_freeze"] = draw(st.booleans())
    return nf, kw


@st.composite
def batches(draw, nf):
    """A batch of ``nf`` features."""
    rows = draw(st.integers(0, 6))
    discrete = draw(st.booleans())                # few distinct values: repeated quantiles
    elements = st.sampled_from([0.0, 1.0, 1.0, 2.0]) if discrete else _value
    x = draw(hnp.arrays(np.float64, (rows, nf), elements=elements))
    dtype = draw(st.sampled_from(_DTYPES))
    with np.errstate(all="ignore"):
        if np.dtype(dtype).kind in "iub":
            x = np.nan_to_num(x, nan=0, posinf=7, neginf=-7).clip(-7, 7)
            if np.dtype(dtype).kind in "ub":
                x = np.abs(x)
        x = x.astype(dtype)
    layout = draw(st.sampled_from(["c", "c", "fortran", "list", "1d", "3d"]))
    if layout == "fortran":
        x = np.asfortranarray(x)
    elif layout == "list":
        x = x.tolist()
    elif layout == "1d":
        x = x.reshape(-1)
    elif layout == "3d":
        x = x.reshape(rows, 1, nf)
    return x


@st.composite
def sessions(draw):
    nf, kw = draw(configs())
    xs = batches(nf)
    ops = draw(st.lists(st.one_of(
        st.tuples(st.just("observe"), xs),
        st.tuples(st.just("observe"), xs),
        st.tuples(st.just("merge"), st.lists(xs, max_size=3)),
        st.tuples(st.just("merge_self")),
        st.tuples(st.just("freeze"), st.lists(xs, max_size=2), st.booleans()),
        st.tuples(st.just("copy")),
        st.tuples(st.just("reset")),
    ), max_size=10))
    return nf, kw, ops


def _exact(v):
    """An array (or number) as something == compares exactly: bytes for floats (sign of
    zero, NaN), lists for integers."""
    if isinstance(v, np.ndarray):
        return (v.dtype.str, v.shape, v.tobytes() if v.dtype.kind == "f" else v.tolist())
    return v


def observe(fs):
    s = fs.state()
    assert set(s) == {"count", "mean", "m2", "variance", "min", "max", "nan_count",
                      "inf_count", "edges", "histogram", "batches_seen", "batches_observed"}
    return ({k: _exact(v) for k, v in s.items()}, _exact(fs.edges), fs.n_features,
            fs.n_bins, fs.sample_every, fs.warmup_rows, fs.batches_seen, fs.batches_observed,
            fs.freeze_due, fs.defer_freeze)


def _call(fn, *args):
    try:
        return fn(*args)
    except Exception as e:       # noqa: BLE001 - the type is the observation
        return type(e)


def run(cls, session):
    nf, kw, ops = session
    fs = cls(nf, **kw)
    trace = [observe(fs)]
    for op, *args in ops:
        if op == "observe":
            trace.append(_call(fs.observe, args[0]))
        elif op == "merge":
            other = cls(nf, **kw)
            for x in args[0]:
                _call(other.observe, x)
            trace.append(_call(fs.merge, other))
        elif op == "merge_self":
            trace.append(_call(fs.merge, fs))
        elif op == "freeze":  # a deferred freeze, with batches observed (or a reset) meanwhile
            meanwhile, reset = args
            pending = fs.freeze_pending()
            trace.append(None if pending is None else len(pending[1]))
            if pending is not None:
                part = fs.freeze_part(pending[1])
                for x in meanwhile:
                    trace.append(_call(fs.observe, x))
                if reset:
                    fs.reset()
                trace.append(fs.freeze_with(pending[0], part))
        elif op == "copy":
            c = fs.copy()
            trace.append(observe(c)[0] == observe(fs)[0])
            fs = c
        else:
            fs.reset()
        trace.append(observe(fs))
    return trace


@settings(max_examples=300, deadline=None)
@given(sessions())
def test_native_equals_twin_on_random_sessions(session):
    with np.errstate(all="ignore"):
        assert run(NativeStats, session) == run(TwinStats, session)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 3), st.integers(1, 10), st.integers(1, 40), st.data())
def test_warmup_freeze_and_merges_while_warming_up(nf, n_bins, warmup_rows, data):
    """Accumulators that freeze at different times, merged both ways, then fed on."""
    xs = [data.draw(batches(nf)) for _ in range(data.draw(st.integers(1, 6)))]
    split = data.draw(st.integers(0, len(xs)))
    traces = []
    for cls in (NativeStats, TwinStats):
        a, b = cls(nf, n_bins=n_bins, warmup_rows=warmup_rows), cls(nf, n_bins=n_bins,
                                                                     warmup_rows=warmup_rows)
        for x in xs[:split]:
            _call(a.observe, x)
        for x in xs[split:]:
            _call(b.observe, x)
        trace = [_call(a.merge, b), observe(a), _call(b.merge, a), observe(b)]
        for x in xs:
            trace += [_call(a.observe, x), observe(a)]
        traces.append(trace)
    assert traces[0] == traces[1]


def test_public_api_is_the_same():
    assert public(NativeStats) == public(TwinStats)


def test_api_errors_are_the_same(impl):
    for kwargs in (dict(), dict(sample_every=0), dict(edges=[1.0]), dict(edges=[2.0, 1.0]),
                   dict(edges=[0.0, np.nan]), dict(edges=[[0.0, 1.0]] * 3),
                   dict(value_range=(1, 1)), dict(value_range=(0, np.inf)),
                   dict(value_range=(-1e308, 1e308)), dict(warmup_rows=0),
                   dict(value_range=(0, 1), n_bins=0)):
        with pytest.raises(ValueError):
            impl.FeatureStats(2 if kwargs else 0, **kwargs)
    fs = impl.FeatureStats(2, value_range=(0, 1))
    for bad in (np.float64(1.0), np.zeros((2, 3)), np.zeros(3)):
        with pytest.raises(ValueError):
            fs.observe(bad)
    assert fs.batches_observed == 0 and fs.batches_seen == 3
    with pytest.raises(ValueError):
        fs.merge(impl.FeatureStats(3, value_range=(0, 1)))
    with pytest.raises(ValueError):
        fs.merge(impl.FeatureStats(2, value_range=(0, 2)))       # other edges
    with pytest.raises(TypeError):
        fs.merge("stats")
    for attr in ("n_features", "n_bins", "batches_seen", "sample_every", "edges"):
        with pytest.raises(AttributeError):
            setattr(fs, attr, 1)


@pytest.mark.parametrize("value_range, n_bins", [((0.0, 0.3), 3), ((0.1, 0.7), 3),
                                                 ((-1.1, 2.3), 7), ((0.0, 1e-300), 3),
                                                 ((-1.0, 1.0), 2)])
def test_uniform_bins_follow_the_reported_edges(value_range, n_bins):
    """Values on, just below and just above every reported edge are binned by those edges."""
    fs = NativeStats(1, value_range=value_range, n_bins=n_bins)
    twin = TwinStats(1, value_range=value_range, n_bins=n_bins)
    e = fs.edges[0]
    assert e.tolist() == twin.edges[0].tolist()
    x = np.concatenate([e, np.nextafter(e, np.inf), np.nextafter(e, -np.inf),
                        e - 1e-275, e + 1e-275])[:, None]
    fs.observe(x)
    twin.observe(x)
    assert fs.state()["histogram"].tolist() == twin.state()["histogram"].tolist()


def test_warmup_rows_are_copied(impl):
    """Rows held for the quantile warm-up are the rows observed, whatever the caller does
    with its array afterwards."""
    fs = impl.FeatureStats(1, warmup_rows=4, n_bins=4)
    x = np.array([[1.0], [2.0]])
    fs.observe(x)
    x[:] = 100.0                                      # the caller reuses its buffer
    fs.observe(np.array([[3.0], [4.0]]))
    st_ = fs.state()
    assert st_["edges"].tolist() == [[1.0, 1.75, 2.5, 3.25, 4.0]]
    assert st_["histogram"].tolist() == [[0, 1, 1, 1, 1, 0]] and st_["max"][0] == 4.0


@pytest.mark.parametrize("rows", [[[-1.7e308], [1.7e308]], [[-1.5e308], [1e308], [1e308]]])
def test_quantile_edges_are_finite_and_sorted(impl, rows):
    fs = impl.FeatureStats(1, warmup_rows=len(rows), n_bins=4)
    with np.errstate(all="ignore"):
        fs.observe(np.array(rows))
    e = fs.edges[0]
    assert np.isfinite(e).all() and (e[1:] >= e[:-1]).all(), e


def test_empty_rank3_batch(impl):
    fs = impl.FeatureStats(4, value_range=(0, 1))
    assert fs.observe(np.zeros((0, 2, 2)))
    assert fs.batches_observed == 1 and fs.state()["count"].tolist() == [0] * 4


def test_merge_none_is_a_type_error(impl):
    fs = impl.FeatureStats(2, value_range=(0, 1))
    with pytest.raises(TypeError):
        fs.merge(None)


def test_uniform_top_of_range_is_in_the_last_bin(impl):
    fs = impl.FeatureStats(1, value_range=(0, 4), n_bins=4)
    fs.observe(np.array([[4.0]]))
    assert fs.state()["histogram"].tolist() == [[0, 0, 0, 0, 1, 0]]


# -- the cases of the former tests/telemetry/test_kernels.py ------------------------------


def _ref_moments(x):
    m = np.ma.masked_invalid(np.asarray(x, dtype=np.float64))
    return m.count(0), m.mean(0).filled(0), m.var(0, ddof=1).filled(np.nan)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int32, np.int64])
def test_featurestats_against_numpy(impl, dtype):
    rng = np.random.default_rng(1)
    x = (rng.normal(5, 3, (777, 6)) * 1000).astype(dtype)
    if np.issubdtype(dtype, np.floating):
        x[3, 1] = np.nan
        x[9, 2] = np.inf
        x[10, 3] = 1e-310 if dtype == np.float64 else 0
    fs = impl.FeatureStats(6, value_range=(-5000, 15000), n_bins=8)
    for s in range(0, len(x), 50):
        fs.observe(x[s:s + 50])
    fs.observe(x[:0])
    st = fs.state()
    cnt, mean, var = _ref_moments(x)
    xf = x.astype(np.float64)
    assert st["count"].tolist() == cnt.tolist()
    np.testing.assert_allclose(st["mean"], mean, rtol=1e-9)
    np.testing.assert_allclose(st["variance"], var, rtol=1e-9)
    assert st["nan_count"].tolist() == np.isnan(xf).sum(0).tolist()
    assert st["inf_count"].tolist() == np.isinf(xf).sum(0).tolist()
    for f in range(6):
        col = xf[:, f][np.isfinite(xf[:, f])]
        ref, _ = np.histogram(col, np.linspace(-5000, 15000, 9))
        assert st["histogram"][f, 1:-1].tolist() == ref.tolist()
        assert st["histogram"][f, 0] == (col < -5000).sum()
        assert st["histogram"][f, -1] == (col > 15000).sum()


def test_featurestats_merge_and_warmup_and_sampling(impl):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(600, 3)) * 1e8 + 1e9
    a, b = impl.FeatureStats(3, warmup_rows=100), impl.FeatureStats(3, warmup_rows=100)
    a.observe(x[:50])
    b.observe(x[50:])
    a.merge(b)
    st = a.state()
    np.testing.assert_allclose(st["mean"], x.mean(0), rtol=1e-9)
    np.testing.assert_allclose(st["variance"], x.var(0, ddof=1), rtol=1e-9)
    assert st["histogram"].sum() == x.size
    s = impl.FeatureStats(3, value_range=(0, 1), sample_every=3)
    for _ in range(7):
        s.observe(x[:10])
    assert s.batches_observed == 3 and s.state()["count"][0] == 30
    hi = impl.FeatureStats(2, value_range=(0, 1))
    hi.observe(np.zeros((4, 1, 2), dtype=np.float32))   # higher rank flattened
    assert hi.state()["count"].tolist() == [4, 4]


# -- the cases of the former tests/telemetry/test_featurestats_native.py -----------------


def _ref_bins(x, edges):
    """Bins [e_i, e_i+1) with the last closed, plus underflow and overflow (per feature)."""
    f_, nb = edges.shape[0], edges.shape[1] - 1
    out = np.zeros((f_, nb + 2), dtype=np.int64)
    for f in range(f_):
        e = edges[f]
        for v in x[:, f]:
            if not np.isfinite(v):
                continue
            if v < e[0]:
                out[f, 0] += 1
            elif v > e[-1]:
                out[f, -1] += 1
            elif v == e[-1]:
                out[f, nb] += 1
            else:
                out[f, int(np.searchsorted(e[:nb], v, side="right"))] += 1
    return out


@pytest.mark.parametrize("with_bad", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.uint8])
def test_fast_and_careful_paths_match_reference(impl, with_bad, dtype):
    """Fast (all-finite) and careful (NaN/Inf) paths agree with a numpy reference, for
    uniform and explicit (duplicated) edges."""
    rng = np.random.default_rng(7)
    with np.errstate(invalid="ignore"):      # uint8 wraps the negative values, as before
        x = (rng.normal(2, 3, (300, 5)) * 10).astype(dtype)
    if with_bad and np.issubdtype(dtype, np.floating):
        x[17, 0] = np.nan
        x[18, 4] = -np.inf
        x[40:60, 2] = np.nan           # one batch with a feature all NaN
    edges = np.array([-40, -10, -10, 0, 5, 5, 30, 60], dtype=np.float64)
    uni = impl.FeatureStats(5, value_range=(-50, 70), n_bins=12)
    exp = impl.FeatureStats(5, edges=edges)
    for s in range(0, len(x), 20):
        uni.observe(x[s:s + 20])
        exp.observe(x[s:s + 20])
    xf = x.astype(np.float64)
    m = np.ma.masked_invalid(xf)
    for fs in (uni, exp):
        st = fs.state()
        assert st["count"].tolist() == m.count(0).tolist()
        np.testing.assert_allclose(st["mean"], m.mean(0).filled(0), rtol=1e-12)
        np.testing.assert_allclose(st["variance"], m.var(0, ddof=1).filled(np.nan),
                                   rtol=1e-9)
        assert st["min"].tolist() == m.min(0).filled(np.inf).tolist()
        assert st["max"].tolist() == m.max(0).filled(-np.inf).tolist()
        assert st["nan_count"].tolist() == np.isnan(xf).sum(0).tolist()
        assert st["inf_count"].tolist() == np.isinf(xf).sum(0).tolist()
        assert st["histogram"].tolist() == _ref_bins(xf, st["edges"]).tolist()


def test_uniform_edges_boundaries(impl):
    fs = impl.FeatureStats(1, value_range=(0, 4), n_bins=4)
    fs.observe(np.array([[-1e-300], [0.0], [1.0], [3.999], [4.0], [4.0000001], [1e308]]))
    assert fs.state()["histogram"].tolist() == [[1, 1, 1, 0, 2, 2]]


def test_layouts_copy_merge_and_overflowing_sum(impl):
    rng = np.random.default_rng(8)
    x = rng.normal(size=(64, 8))
    a = impl.FeatureStats(8, value_range=(-3, 3))
    a.observe(np.asfortranarray(x))                 # non-contiguous
    a.observe(x.astype(">f8"))                       # byte-swapped
    a.observe(x.tolist())                            # not an array
    a.observe(x.astype(np.float16))                  # other dtype: converted
    b = a.copy()
    b.merge(a)
    sa, sb = a.state(), b.state()
    assert (sb["count"] == 2 * sa["count"]).all()
    assert (sb["histogram"] == 2 * sa["histogram"]).all()
    np.testing.assert_allclose(sb["mean"], sa["mean"], rtol=1e-12)
    big = impl.FeatureStats(1, value_range=(0, 1))        # finite values, infinite sum
    with np.errstate(over="ignore", invalid="ignore"):   # the twin's float64 sums overflow
        big.observe(np.array([[1e308], [1e308], [-1e308]]))
    st = big.state()
    assert st["count"].tolist() == [3] and st["inf_count"].tolist() == [0]
    assert st["histogram"][0, -1] == 2 and st["histogram"][0, 0] == 1


@st.composite
def _edges_and_values(draw):
    """Sorted edges (duplicates, tiny or huge spans, very uneven widths) and values
    that sit on, just beside and between them, or anywhere."""
    kind = draw(st.sampled_from(["any", "narrow", "discrete", "wide"]))
    if kind == "narrow":
        base = draw(st.floats(-1e6, 1e6))
        step = draw(st.floats(1e-12, 1e-3))
        n = draw(st.integers(2, 14))
        edges = sorted(base + step * draw(st.integers(0, 50)) for _ in range(n))
    elif kind == "discrete":
        levels = draw(st.lists(st.integers(-3, 3), min_size=1, max_size=4, unique=True))
        n = draw(st.integers(2, 12))
        edges = sorted(float(draw(st.sampled_from(levels))) for _ in range(n))
    elif kind == "wide":
        edges = sorted(draw(st.lists(st.floats(-1e300, 1e300), min_size=2, max_size=12)))
    else:
        edges = sorted(draw(st.lists(_finite, min_size=2, max_size=40)))
    e = np.array(edges, dtype=np.float64)
    with np.errstate(all="ignore"):
        near = np.concatenate([e, np.nextafter(e, np.inf), np.nextafter(e, -np.inf),
                               e[:-1] / 2 + e[1:] / 2])
    extra = np.array(draw(st.lists(_finite, max_size=20)), dtype=np.float64)
    values = np.concatenate([near, extra])
    values = values[np.isfinite(values)]
    return e, values


def _assert_binned_like_reference(cls, values, edges, bad=None):
    """One feature of ``values`` (plus ``bad``, which sends the batch through the
    NaN/Inf-aware pass) binned by ``edges`` equals the numpy reference."""
    x = values.reshape(-1, 1)
    if bad is not None:
        x = np.concatenate([x, [[bad]]])
    fs = cls(1, edges=edges)
    with np.errstate(all="ignore"):
        fs.observe(x)
    assert fs.state()["histogram"].tolist() == _ref_bins(x, edges[None, :]).tolist()


@settings(max_examples=300, deadline=None)
@given(_edges_and_values(), st.booleans(), st.sampled_from([NativeStats, TwinStats]))
def test_edge_lookup_matches_reference(ev, careful, cls):
    """Binning by explicit edges (table lookup, equal-threshold and binary-search cells)
    equals the numpy reference for any sorted edges, including values on the edges;
    ``careful`` adds a NaN so the batch goes through the NaN-aware pass."""
    edges, values = ev
    _assert_binned_like_reference(cls, values, edges, np.nan if careful else None)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(-100, 100, width=32), min_size=1, max_size=64),
       st.lists(st.floats(-100, 100), min_size=2, max_size=12),
       st.sampled_from([NativeStats, TwinStats]))
def test_edge_lookup_float32_inputs(values, edges, cls):
    """float32 inputs against float64 edges (the value is widened exactly)."""
    e = np.sort(np.array(edges))
    x = np.array(values, dtype=np.float32).reshape(-1, 1)
    fs = cls(1, edges=e)
    fs.observe(x)
    ref = _ref_bins(x.astype(np.float64), e[None, :])
    assert fs.state()["histogram"].tolist() == ref.tolist()


@pytest.mark.parametrize("edges", [
    np.concatenate([[0.0], 1e-9 * np.arange(1, 31), [1e6]]),   # 31 distinct edges in one cell
    np.array([0.0] * 20 + [1.0]),                               # 20 equal edges in one cell
    np.array([5.0] * 4),                                        # no span at all
    np.array([5.0] * 21),                                       # no span, many edges
    np.array([-1.0, 0.0, 0.0, 0.0, 1.0, 1.0]),                  # equal groups, top repeated
], ids=["crowded-distinct", "crowded-equal", "flat-4", "flat-21", "groups"])
@pytest.mark.parametrize("careful", [False, True])
def test_edge_lookup_crowded_cells(impl, edges, careful):
    """Cells holding many thresholds (distinct: binary search; equal: added at once; up
    to eight: counted) agree with the reference, on and around every edge."""
    with np.errstate(all="ignore"):
        near = np.concatenate([edges, np.nextafter(edges, np.inf), np.nextafter(edges, -np.inf),
                               np.linspace(edges[0] - 1, edges[-1] + 1, 50)])
    _assert_binned_like_reference(impl.FeatureStats, near, edges, np.inf if careful else None)


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=12), elements=_value),
       st.integers(1, 9))
def test_all_columns_at_once_equal_each_column_alone(rows, n_bins):
    """The native freeze takes every column's quantiles from one sort; the twin, one column at a
    time with ``np.quantile``: the edges are the same to the bit (NaN, infinities, huge values,
    constant and empty columns included)."""
    from gateway._native.featurestats import _quantile_edges
    from tests.reference.featurestats import quantile_edges
    with np.errstate(all="ignore"):
        want = quantile_edges(rows, n_bins)
        got = _quantile_edges(rows, n_bins)
    assert got.shape == want.shape
    assert np.array_equal(got, want), (rows, got, want)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 3), st.integers(1, 8), st.integers(1, 20), st.data())
def test_a_deferred_freeze_ends_as_an_inline_one(nf, n_bins, warmup_rows, data):
    """Frozen by its owner (at any point after the freeze is due, batches observed between
    taking the freeze set and handing the part back) or by observe at DEFER_MAX_FACTOR x
    warmup_rows: the same state as the accumulator that froze inline."""
    xs = [data.draw(batches(nf)) for _ in range(data.draw(st.integers(1, 8)))]
    take_at = data.draw(st.integers(0, len(xs)))
    give_at = data.draw(st.integers(take_at, len(xs)))
    for cls in (NativeStats, TwinStats):
        inline = cls(nf, n_bins=n_bins, warmup_rows=warmup_rows)
        deferred = cls(nf, n_bins=n_bins, warmup_rows=warmup_rows, defer_freeze=True)
        pending = part = None
        with np.errstate(all="ignore"):
            for i, x in enumerate(xs):
                if i == take_at:
                    pending = deferred.freeze_pending()
                    part = deferred.freeze_part(pending[1]) if pending is not None else None
                if i == give_at and pending is not None:
                    deferred.freeze_with(pending[0], part)
                assert _call(inline.observe, x) == _call(deferred.observe, x)
            if pending is not None and give_at == len(xs):
                deferred.freeze_with(pending[0], part)
            if deferred.freeze_due:  # the owner's freeze at the end
                pending = deferred.freeze_pending()
                assert deferred.freeze_with(pending[0], deferred.freeze_part(pending[1]))
        assert not deferred.freeze_due
        assert observe(deferred)[:-1] == observe(inline)[:-1]


@pytest.mark.parametrize("cls", [NativeStats, TwinStats])
def test_deferred_freeze_is_bounded_and_refuses_stale_parts(cls):
    x = np.arange(12.0).reshape(6, 2)
    fs = cls(2, n_bins=3, warmup_rows=10, defer_freeze=True)
    fs.observe(x)
    assert not fs.freeze_due and fs.freeze_pending() is None
    fs.observe(x)                                   # 12 rows buffered: due, not frozen
    assert fs.freeze_due and fs.edges is None
    token, batches = fs.freeze_pending()
    assert len(batches) == 2
    part = fs.freeze_part(batches)
    fs.reset()                                      # the buffer is gone: the part is stale
    assert not fs.freeze_with(token, part) and fs.edges is None
    for _ in range(3):
        fs.observe(x)                               # 18 rows: still deferred
    assert fs.freeze_due
    fs.observe(x)                                   # 24 >= 2 x 10: observe froze inline
    assert not fs.freeze_due and fs.edges is not None
    assert not fs.freeze_with(token, part)          # already frozen
    assert fs.state()["histogram"].sum() == 2 * 24
    with pytest.raises(ValueError):
        fs.freeze_part([])
    with pytest.raises(TypeError):
        fs.freeze_with(token, None)
