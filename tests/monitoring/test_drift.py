"""gateway.monitoring.drift: the measures against independent computations on the same bins,
the KS binning bound against scipy on the raw values, windows over cumulative snapshots, and
a mean shift in one of 16 features found through the real FeatureStats kernel."""
import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.spatial.distance import jensenshannon
from scipy.stats import ks_2samp

from gateway import kernels
from gateway.monitoring import (DEFAULT_THRESHOLDS, PSI_EPS, DriftThresholds, HistogramWindows, Threshold,
                                feature_drift, grade, js_distance, ks_binned, psi)

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- strategies ------------------------------------------------------------------------------

@st.composite
def hist_pairs(draw, max_features=4, max_bins=8):
    """Two count arrays [features, bins] over the same bins: zeros, single bins, all mass in
    the first (underflow) or last (overflow) bin, empty features."""
    f = draw(st.integers(1, max_features))
    b = draw(st.integers(1, max_bins))
    counts = st.one_of(st.just(0), st.integers(0, 5), st.integers(0, 10_000))
    ref = draw(hnp.arrays(np.int64, (f, b), elements=counts))
    cur = draw(hnp.arrays(np.int64, (f, b), elements=counts))
    if b > 1 and draw(st.booleans()):   # all the current mass in one end bin
        end = draw(st.sampled_from([0, b - 1]))
        cur[:, end] += cur.sum(axis=1)
        cur[:, [i for i in range(b) if i != end]] = 0
    return ref, cur


def bin_values(values, edges):
    """Counts [n_bins + 2] the FeatureStats way: underflow (< e0), [e_i, e_i+1) with the last
    bin closed, overflow (> e_last)."""
    values = np.asarray(values, dtype=np.float64)
    out = np.zeros(len(edges) + 1, dtype=np.int64)
    out[0] = (values < edges[0]).sum()
    out[-1] = (values > edges[-1]).sum()
    inside = values[(values >= edges[0]) & (values <= edges[-1])]
    out[1:-1] = np.histogram(inside, bins=edges)[0]
    return out


@st.composite
def raw_samples(draw):
    """Sorted distinct edges and two raw samples built to be awkward: values on the edges,
    ties, everything in one bin, below the first edge or above the last."""
    n_edges = draw(st.integers(2, 7))      # 1 to 6 bins besides under/overflow
    edges = np.array(sorted(draw(st.sets(st.integers(-20, 20), min_size=n_edges, max_size=n_edges))),
                     dtype=np.float64)
    pool = np.concatenate([edges, edges + 0.25, edges - 0.25, edges + 0.5, [-100.0, 100.0]])
    value = st.one_of(st.sampled_from(sorted(pool.tolist())),
                      st.floats(-30, 30, allow_nan=False, allow_infinity=False))
    shape = st.sampled_from(["free", "one_bin", "under", "over"])

    def sample():
        kind = draw(shape)
        n = draw(st.integers(1, 40))
        if kind == "under":
            return np.array(draw(st.lists(st.floats(-1e3, edges[0] - 1e-3), min_size=n, max_size=n)))
        if kind == "over":
            return np.array(draw(st.lists(st.floats(edges[-1] + 1e-3, 1e3), min_size=n, max_size=n)))
        if kind == "one_bin" and len(edges) > 1:
            j = draw(st.integers(0, len(edges) - 2))
            lo, hi = edges[j], edges[j + 1]
            return np.array(draw(st.lists(st.floats(lo, np.nextafter(hi, -np.inf)), min_size=n, max_size=n)))
        return np.array(draw(st.lists(value, min_size=n, max_size=n)))

    return edges, sample(), sample()


def raw_ks(a, b):
    """scipy's two-sample KS statistic on raw values (its p-value's warnings are noise here)."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return float(ks_2samp(a, b, method="asymp").statistic)


# -- independent reference computations (plain loops over one feature) -----------------------

def psi_reference(ref, cur, eps=1e-4):
    nr, nc = sum(ref), sum(cur)
    if nr == 0 or nc == 0:
        return math.nan
    total = 0.0
    for r, c in zip(ref, cur):
        p = max(r / nr, eps)
        q = max(c / nc, eps)
        total += (q - p) * math.log(q / p)
    return total


def ks_reference(ref, cur):
    nr, nc = sum(ref), sum(cur)
    if nr == 0 or nc == 0:
        return math.nan
    best, cr, cc = 0.0, 0, 0
    for r, c in zip(ref, cur):
        cr += r
        cc += c
        best = max(best, abs(cr / nr - cc / nc))
    return best


# -- PSI, JS, KS on the same bins ---------------------------------------------------------------

@SETTINGS
@given(hist_pairs())
def test_psi_equals_a_loop_over_bins(pair):
    ref, cur = pair
    got = psi(ref, cur)
    assert got.shape == (ref.shape[0],)
    for f in range(ref.shape[0]):
        want = psi_reference(ref[f].tolist(), cur[f].tolist())
        if math.isnan(want):
            assert math.isnan(got[f])
        else:
            assert got[f] == pytest.approx(want, rel=1e-12, abs=1e-12)
            bound = (2 + ref.shape[1] * PSI_EPS) * math.log(1 / PSI_EPS)
            assert 0.0 <= got[f] <= bound
    np.testing.assert_allclose(psi(cur, ref), got, rtol=1e-12, atol=1e-12)  # symmetric


def test_psi_values_by_hand():
    # 50/50 against 75/25: (0.25 - 0.5) ln(0.25 / 0.5) + (0.75 - 0.5) ln(0.75 / 0.5)
    assert float(psi([50, 50], [75, 25])) == pytest.approx(0.25 * math.log(2) + 0.25 * math.log(1.5))
    # a bin empty on one side counts at the 1e-4 floor, not infinitely
    assert float(psi([100, 0], [99, 1])) == pytest.approx(
        (0.99 - 1.0) * math.log(0.99) + (0.01 - 1e-4) * math.log(0.01 / 1e-4))
    assert float(psi([7, 0, 3], [70, 0, 30])) == pytest.approx(0.0, abs=1e-15)
    # all the mass in the underflow bin against all of it in the overflow bin: the maximum
    assert float(psi([5, 0, 0], [0, 0, 9])) == pytest.approx(2 * (1 - 1e-4) * math.log(1e4))
    assert float(psi([1, 3], [3, 1], eps=0.3)) == pytest.approx(2 * (0.75 - 0.3) * math.log(0.75 / 0.3))


@SETTINGS
@given(hist_pairs())
def test_js_distance_equals_scipy_base_2(pair):
    ref, cur = pair
    got = js_distance(ref, cur)
    for f in range(ref.shape[0]):
        if ref[f].sum() == 0 or cur[f].sum() == 0:
            assert math.isnan(got[f])
            continue
        with np.errstate(invalid="ignore"):  # scipy's sqrt of a divergence rounded below 0
            want = float(jensenshannon(ref[f], cur[f], base=2))
        assert 0.0 <= got[f] <= 1.0
        if math.isnan(want):
            assert got[f] == pytest.approx(0.0, abs=1e-7)
        else:
            # the square root magnifies rounding near 0: compare the divergences there
            assert got[f] ** 2 == pytest.approx(want ** 2, abs=1e-13)
            assert got[f] == pytest.approx(want, rel=1e-9, abs=1e-7)


def test_js_distance_fixed_values():
    assert float(js_distance([1, 0], [0, 1])) == 1.0             # disjoint: 1 in base 2
    assert float(js_distance([3, 3], [6, 6])) == 0.0
    p, q = np.array([10, 20, 30, 0]), np.array([0, 25, 25, 10])
    assert float(js_distance(p, q)) == pytest.approx(float(jensenshannon(p, q, base=2)), rel=1e-12)


@SETTINGS
@given(hist_pairs())
def test_ks_binned_equals_a_loop_over_cumulative_counts(pair):
    ref, cur = pair
    d, err = ks_binned(ref, cur)
    for f in range(ref.shape[0]):
        want = ks_reference(ref[f].tolist(), cur[f].tolist())
        if math.isnan(want):
            assert math.isnan(d[f]) and math.isnan(err[f])
            continue
        assert d[f] == pytest.approx(want, abs=1e-12)
        p, q = ref[f] / ref[f].sum(), cur[f] / cur[f].sum()
        assert -1e-12 <= err[f] <= np.minimum(p, q).max() + 1e-12   # the corollary
        assert d[f] + err[f] <= 1.0 + 1e-12


@SETTINGS
@given(raw_samples())
def test_raw_ks_lies_within_the_binned_statistic_and_its_error(sample):
    edges, raw_ref, raw_cur = sample
    ref, cur = bin_values(raw_ref, edges), bin_values(raw_cur, edges)
    assert ref.sum() == len(raw_ref) and cur.sum() == len(raw_cur)
    d, err = (float(x) for x in ks_binned(ref, cur))
    raw = raw_ks(raw_ref, raw_cur)
    assert d - 1e-12 <= raw <= d + err + 1e-12


def test_raw_ks_within_the_bound_on_random_data():
    rng = np.random.default_rng(7)
    for trial in range(200):
        edges = np.sort(rng.normal(size=rng.integers(1, 12)))
        edges = np.unique(edges)
        raw_ref = rng.normal(size=rng.integers(1, 300))
        raw_cur = rng.normal(loc=rng.uniform(-1, 1), scale=rng.uniform(0.5, 2), size=rng.integers(1, 300))
        d, err = (float(x) for x in ks_binned(bin_values(raw_ref, edges), bin_values(raw_cur, edges)))
        raw = raw_ks(raw_ref, raw_cur)
        assert d - 1e-12 <= raw <= d + err + 1e-12, trial


@SETTINGS
@given(st.integers(1, 6).flatmap(lambda b: st.tuples(
    st.lists(st.integers(0, 6), min_size=b + 2, max_size=b + 2),
    st.lists(st.integers(0, 6), min_size=b + 2, max_size=b + 2))))
def test_the_ks_bound_is_attained(pair):
    """Sharpness: raw values consistent with the two histograms reach ``ks + error`` exactly
    (the reference rows of the worst bin at its left end, the current ones at its right end,
    or the other way round), so a looser or tighter bound fails here."""
    ref, cur = np.array(pair[0]), np.array(pair[1])
    assume(ref.sum() > 0 and cur.sum() > 0)
    edges = np.arange(len(ref) - 1, dtype=np.float64)     # unit bins; under/overflow outside
    d, err = (float(x) for x in ks_binned(ref, cur))
    best = d
    lefts = np.concatenate([[edges[0] - 1.0], edges])        # a point inside each slot's left end
    for j in range(len(ref)):
        for ref_left in (True, False):
            lo, hi = lefts[j] + 0.1, lefts[j] + 0.9
            a, b = (lo, hi) if ref_left else (hi, lo)
            raw_ref = np.concatenate([np.full(ref[k], lefts[k] + 0.5) for k in range(len(ref)) if k != j]
                                     + [np.full(ref[j], a)])
            raw_cur = np.concatenate([np.full(cur[k], lefts[k] + 0.5) for k in range(len(cur)) if k != j]
                                     + [np.full(cur[j], b)])
            assert (bin_values(raw_ref, edges) == ref).all() and (bin_values(raw_cur, edges) == cur).all()
            best = max(best, raw_ks(raw_ref, raw_cur))
    assert best == pytest.approx(d + err, abs=1e-12)


def test_ks_error_is_the_smaller_mass_not_the_larger():
    # one bin: both CDFs rise 0 -> 1 inside it; the raw statistic can be anything up to 1
    d, err = ks_binned([4], [9])
    assert float(d) == 0.0 and float(err) == 1.0
    assert raw_ks([0.1] * 4, [0.9] * 9) == 1.0
    # a bin only one side has rows in adds nothing: raw KS is the binned one
    d, err = ks_binned([0, 10, 0], [5, 0, 5])
    assert float(d) == 0.5 and float(err) == 0.0
    # masses 0.2 / 0.45, 0.6 / 0.1, 0.2 / 0.45: the error is 0.2 (the smaller of the first
    # bin's), not 0.6 (the larger of the middle one's) ...
    d, err = ks_binned([2, 6, 2], [45, 10, 45])
    assert float(d) == pytest.approx(0.25) and float(err) == pytest.approx(0.2)
    # ... and raw values reach it: the current rows of the first bin below the reference ones
    raw_ref = [-0.1] * 2 + [0.5] * 6 + [1.5] * 2
    raw_cur = [-0.9] * 45 + [0.5] * 10 + [1.5] * 45
    assert (bin_values(raw_ref, [0.0, 1.0]) == [2, 6, 2]).all()
    assert raw_ks(raw_ref, raw_cur) == pytest.approx(0.45)


def test_raw_ks_through_the_feature_stats_kernel():
    """The bound holds on histograms the kernel itself bins (its edge conventions)."""
    rng = np.random.default_rng(3)
    edges = np.array([-1.0, -0.25, 0.0, 0.5, 2.0])
    for _ in range(20):
        raw_ref = np.concatenate([rng.normal(size=200), rng.choice(edges, 20)])
        raw_cur = np.concatenate([rng.normal(0.3, 1.2, size=150), rng.choice(edges, 20)])
        hists = []
        for raw in (raw_ref, raw_cur):
            fs = kernels.FeatureStats(1, edges=edges)
            fs.observe(raw[:, None])
            hists.append(fs.state()["histogram"][0])
        np.testing.assert_array_equal(hists[0], bin_values(raw_ref, edges))
        d, err = (float(x) for x in ks_binned(hists[0], hists[1]))
        assert d - 1e-12 <= raw_ks(raw_ref, raw_cur) <= d + err + 1e-12


# -- empty windows -------------------------------------------------------------------------------

def test_a_feature_without_rows_is_nan_and_unknown():
    ref = np.array([[3, 4, 5], [0, 0, 0], [1, 1, 1], [0, 0, 0]])
    cur = np.array([[3, 4, 5], [2, 2, 2], [0, 0, 0], [0, 0, 0]])
    for got in (psi(ref, cur), js_distance(ref, cur), *ks_binned(ref, cur)):
        assert not np.isnan(got[0]) and np.isnan(got[1:]).all()
    rows = feature_drift(ref, cur)
    assert [r.grade for r in rows] == ["ok", "unknown", "unknown", "unknown"]
    assert rows[1].reference_rows == 0 and rows[1].window_rows == 6
    assert rows[0] == (0, 12, 12, 0.0, 0.0, 0.0, rows[0].ks_error, "ok", "ok", "ok", "ok")


def test_bad_input_raises():
    with pytest.raises(ValueError):
        psi([[1, 2]], [[1, 2, 3]])
    with pytest.raises(ValueError):
        js_distance([1, -1], [1, 1])
    with pytest.raises(ValueError):
        ks_binned([], [])
    with pytest.raises(ValueError):
        psi([1], [1], eps=0.0)


# -- thresholds and grades ---------------------------------------------------------------------

def test_default_thresholds_and_grades():
    t = DEFAULT_THRESHOLDS
    assert (t.psi.warn, t.psi.alert) == (0.1, 0.25)
    assert (t.js.warn, t.js.alert) == (None, 0.1)
    assert (t.ks.warn, t.ks.alert) == (0.1, 0.2)
    assert [grade(v, t.psi) for v in (0.0, 0.0999, 0.1, 0.2499, 0.25, 3.0, math.nan)] == \
        ["ok", "ok", "warn", "warn", "alert", "alert", "unknown"]
    assert [grade(v, t.js) for v in (0.0999, 0.1, np.float64(0.5))] == ["ok", "alert", "alert"]
    with pytest.raises(ValueError):
        Threshold(warn=0.3, alert=0.2)
    with pytest.raises(AttributeError):
        t.psi = Threshold(None, 1.0)  # type: ignore[misc]
    strict = DriftThresholds(js=Threshold(warn=0.01, alert=0.05))
    (row,) = feature_drift([[50, 50]], [[55, 45]], strict)
    assert row.js_grade == "warn" and row.grade == "warn" and row.psi_grade == "ok"


# -- windows over cumulative snapshots ----------------------------------------------------------

S = 1_000_000_000


def test_windows_by_rows_and_time_by_hand():
    w = HistogramWindows(max_snapshots=10, min_interval_s=0.0)
    assert w.by_rows(1) is None and w.by_time(1.0) is None
    w.add(0 * S, 0, [[0, 0, 0]])
    w.add(1 * S, 10, [[2, 5, 3]])
    w.add(2 * S, 30, [[4, 20, 6]])
    w.add(4 * S, 35, [[4, 24, 7]])
    win = w.by_rows(5)               # exactly the last snapshot's 5 rows
    assert win.rows == 5 and win.counts.tolist() == [[0, 4, 1]]
    assert (win.start_t_ns, win.end_t_ns) == (2 * S, 4 * S)
    win = w.by_rows(6)               # 6 rows: the snapshot before holds 25
    assert win.rows == 25 and win.counts.tolist() == [[2, 19, 4]] and win.duration_s == 3.0
    assert w.by_rows(35).rows == 35 and w.by_rows(36) is None
    win = w.by_time(2.0)
    assert win.start_t_ns == 2 * S and win.rows == 5
    win = w.by_time(2.5)             # at least 2.5 s: back to t = 1 s
    assert win.start_t_ns == 1 * S and win.counts.tolist() == [[2, 19, 4]]
    assert w.by_time(4.0).rows == 35 and w.by_time(4.1) is None
    with pytest.raises(ValueError):
        w.by_rows(0)
    with pytest.raises(ValueError):
        w.by_time(0.0)
    with pytest.raises(ValueError):
        w.add(3 * S, 40, [[4, 24, 8]])   # time went backwards


def test_the_ring_is_bounded_and_thinned():
    w = HistogramWindows(max_snapshots=4, min_interval_s=1.0)
    hist = np.zeros((3, 5), dtype=np.int64)
    for i in range(50):              # one flush every 0.25 s, 2 rows each
        hist[:, i % 5] += 2
        w.add(i * S // 4, 2 * (i + 1), hist)
    assert len(w) == 4
    assert [s.t_ns for s in w.snapshots] == [int(k * S) for k in (9, 10, 11, 12)]   # one a second
    assert w.latest.t_ns == 49 * S // 4 and w.latest.rows_total == 100
    assert w.nbytes == 5 * 3 * 5 * 8  # four ring snapshots and the latest
    win = w.by_time(1.0)             # from 12 s to 12.25 s is under 1 s: the 11 s snapshot
    assert win.start_t_ns == 11 * S and win.rows == 100 - 90 and win.counts.sum() == 3 * 10
    assert w.by_time(3.25).start_t_ns == 9 * S and w.by_time(3.3) is None   # 9 s is the oldest kept
    assert w.by_rows(100 - 74).rows == 100 - 74 and w.by_rows(100 - 73) is None
    # the snapshot is a copy: changing the caller's array later changes nothing held
    hist[:] = 10 ** 6
    assert w.latest.counts.max() < 10 ** 6


@pytest.mark.parametrize("change", ["rows", "bin", "shape", "edges"])
def test_a_reset_starts_over(change):
    w = HistogramWindows(max_snapshots=8, min_interval_s=0.0)
    edges = np.array([[0.0, 1.0, 2.0]])
    w.add(0, 0, [[0, 0, 0, 0]], edges)
    w.add(S, 100, [[10, 40, 40, 10]], edges)
    assert w.by_rows(100).rows == 100
    later = {"rows": (30, [[3, 12, 12, 3]], edges),
             "bin": (150, [[12, 20, 100, 18]], edges),        # more rows, but a bin went down
             "shape": (150, [[10, 40, 40, 10, 50]], None),
             "edges": (150, [[10, 50, 70, 20]], edges + 1)}[change]
    assert w.add(2 * S, *later) is True
    assert w.resets == 1 and len(w) == 1 and w.by_rows(1) is None
    rows, counts, e = later
    grown = np.array(counts) + 1
    assert w.add(3 * S, rows + grown.shape[1], grown, e) is False
    win = w.by_rows(1)
    assert win.rows == grown.shape[1] and (win.counts == 1).all() and win.start_t_ns == 2 * S


def test_edges_first_given_and_unchanged_are_no_reset():
    w = HistogramWindows(min_interval_s=0.0)
    assert w.add(0, 10, [[0, 0, 0]], None) is False       # warming up: no edges yet
    assert w.add(S, 20, [[5, 10, 5]], [0.0, 1.0]) is False
    assert w.add(2 * S, 30, [[5, 15, 10]], [0.0, 1.0]) is False
    assert w.by_rows(20).counts.tolist() == [[5, 15, 10]] and w.resets == 0


# -- a mean shift in one of 16 features, through the kernel ------------------------------------

def test_a_half_sigma_shift_in_one_of_16_features():
    rng = np.random.default_rng(12)
    features, shifted = 16, 5
    fs = kernels.FeatureStats(features, n_bins=10, warmup_rows=4096)   # quantile bins of the reference
    w = HistogramWindows(min_interval_s=0.0)
    t = 0

    def flush():
        nonlocal t
        t += S
        state = fs.state()
        w.add(t, int(state["count"][0]), state["histogram"], state["edges"])

    raw = []
    for _ in range(40):
        raw.append(rng.normal(size=(500, features)))
        fs.observe(raw[-1])
        flush()
    reference = w.latest.counts
    assert w.latest.rows_total == 20_000 and fs.edges is not None
    for _ in range(12):
        batch = rng.normal(size=(250, features))
        batch[:, shifted] += 0.5
        raw.append(batch)
        fs.observe(batch)
        flush()
    window = w.by_rows(3000)
    assert window.rows == 3000 and (window.counts.sum(axis=1) == 3000).all()
    rows = feature_drift(reference, window.counts)
    hit = rows[shifted]
    t = DEFAULT_THRESHOLDS
    assert hit.psi >= t.psi.warn and hit.psi_grade in ("warn", "alert")
    assert hit.js >= t.js.alert and hit.js_grade == "alert"
    assert hit.ks >= t.ks.warn and hit.ks_grade in ("warn", "alert")
    assert hit.grade in ("warn", "alert")
    others = [r for r in rows if r.feature != shifted]
    assert len(others) == 15 and all(r.grade == "ok" for r in others), others
    # the raw KS of the same rows lies within the binned statistic and its error
    values = np.concatenate(raw)[:, shifted]
    raw_stat = raw_ks(values[:20_000], values[20_000:])
    assert hit.ks - 1e-12 <= raw_stat <= hit.ks + hit.ks_error + 1e-12


def test_a_wide_histogram_keeps_fewer_snapshots_within_its_byte_bound_reaching_as_far_back():
    """4,096 features of 12 cells are 393,216 bytes a snapshot: within 32 MiB, 84 of them (the
    latest beside), spaced 600 s / 84 apart instead of 1 s, so the ring still reaches back 600 s."""
    w = HistogramWindows(max_snapshots=600, min_interval_s=1.0, max_bytes=32 << 20)
    counts = np.zeros((4096, 12), np.int64)
    for second in range(1200):
        counts[:, 3] += 1
        w.add(second * 10**9, second + 1, counts)
    assert len(w) == 84 and w.interval_ns == 600 * 10**9 // 84
    assert w.nbytes <= 32 << 20
    window = w.by_time(60.0)
    assert 60.0 <= window.duration_s < 60.0 + w.interval_ns / 1e9 + 1
    assert window.rows == round(window.duration_s)
    narrow = HistogramWindows(max_snapshots=600, min_interval_s=1.0, max_bytes=32 << 20)
    for second in range(700):
        narrow.add(second * 10**9, second + 1, np.full((16, 12), second, np.int64))
    assert len(narrow) == 600 and narrow.interval_ns == 10**9   # narrow ones: as without the bound
    huge = HistogramWindows(max_snapshots=600, min_interval_s=1.0, max_bytes=1 << 20)
    for second in range(0, 1200, 20):
        huge.add(second * 10**9, second + 1, np.full((65536, 12), second, np.int64))
    assert len(huge) == 2 and huge.interval_ns == 300 * 10**9    # never fewer than 2 in the ring
