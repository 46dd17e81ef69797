"""FeatureStats on C-array state: fast (all-finite) and careful (NaN/Inf) paths agree
with a numpy reference, for uniform and explicit (duplicated) edges and odd layouts."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.kernels import FeatureStats


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
def test_fast_and_careful_paths_match_reference(with_bad, dtype):
    rng = np.random.default_rng(7)
    x = (rng.normal(2, 3, (300, 5)) * 10).astype(dtype)
    if with_bad and np.issubdtype(dtype, np.floating):
        x[17, 0] = np.nan
        x[18, 4] = -np.inf
        x[40:60, 2] = np.nan           # one batch with a feature all NaN
    edges = np.array([-40, -10, -10, 0, 5, 5, 30, 60], dtype=np.float64)
    uni = FeatureStats(5, value_range=(-50, 70), n_bins=12)
    exp = FeatureStats(5, edges=edges)
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


def test_uniform_edges_boundaries():
    fs = FeatureStats(1, value_range=(0, 4), n_bins=4)
    fs.observe(np.array([[-1e-300], [0.0], [1.0], [3.999], [4.0], [4.0000001], [1e308]]))
    assert fs.state()["histogram"].tolist() == [[1, 1, 1, 0, 2, 2]]


def test_layouts_copy_merge_and_overflowing_sum():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(64, 8))
    a = FeatureStats(8, value_range=(-3, 3))
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
    big = FeatureStats(1, value_range=(0, 1))        # finite values, infinite sum
    big.observe(np.array([[1e308], [1e308], [-1e308]]))
    st = big.state()
    assert st["count"].tolist() == [3] and st["inf_count"].tolist() == [0]
    assert st["histogram"][0, -1] == 2 and st["histogram"][0, 0] == 1


_finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


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


def _assert_binned_like_reference(values, edges, bad=None):
    """One feature of ``values`` (plus ``bad``, which sends the batch through the
    NaN/Inf-aware pass) binned by ``edges`` equals the numpy reference."""
    x = values.reshape(-1, 1)
    if bad is not None:
        x = np.concatenate([x, [[bad]]])
    fs = FeatureStats(1, edges=edges)
    fs.observe(x)
    assert fs.state()["histogram"].tolist() == _ref_bins(x, edges[None, :]).tolist()


@settings(max_examples=300, deadline=None)
@given(_edges_and_values(), st.booleans())
def test_edge_lookup_matches_reference(ev, careful):
    """Binning by explicit edges (table lookup, equal-threshold and binary-search cells)
    equals the numpy reference for any sorted edges, including values on the edges;
    ``careful`` adds a NaN so the batch goes through the NaN-aware pass."""
    edges, values = ev
    _assert_binned_like_reference(values, edges, np.nan if careful else None)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(-100, 100, width=32), min_size=1, max_size=64),
       st.lists(st.floats(-100, 100), min_size=2, max_size=12))
def test_edge_lookup_float32_inputs(values, edges):
    """float32 inputs against float64 edges (the value is widened exactly)."""
    e = np.sort(np.array(edges))
    x = np.array(values, dtype=np.float32).reshape(-1, 1)
    fs = FeatureStats(1, edges=e)
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
def test_edge_lookup_crowded_cells(edges, careful):
    """Cells holding many thresholds (distinct: binary search; equal: added at once; up
    to eight: counted) agree with the reference, on and around every edge."""
    with np.errstate(all="ignore"):
        near = np.concatenate([edges, np.nextafter(edges, np.inf), np.nextafter(edges, -np.inf),
                               np.linspace(edges[0] - 1, edges[-1] + 1, 50)])
    _assert_binned_like_reference(near, edges, np.inf if careful else None)
