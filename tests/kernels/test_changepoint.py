"""What the change detector is for, beyond its parity with the twin: the ERT knob gives the
false-alarm rate it promises (checked by simulation, one and several features), a 0.5-sigma
shift is caught on the right side within a few hundred rows, Siegmund's delay matches, and
the compiled loop gives the same alarms whether a stream comes in one large batch (GIL
released, alarm buffer grown mid-batch) or in small ones."""
from __future__ import annotations

import numpy as np
import pytest

from gateway.kernels import ChangeDetector, cusum_arl, cusum_threshold


@pytest.mark.parametrize("n_features, ert_rows, rows, tolerance", [
    (1, 250.0, 2_000_000, 0.06),      # ~8000 alarms expected
    (8, 2000.0, 1_000_000, 0.15),     # ~500, the knob split over 16 one-sided tests
])
def test_false_alarm_rate_is_the_knob(n_features, ert_rows, rows, tolerance):
    d = ChangeDetector(np.zeros(n_features), np.ones(n_features),
                       expected_rows_between_false_alarms=ert_rows)
    assert d.arl0_rows_per_side == ert_rows * 2 * n_features
    assert cusum_arl(d.threshold_sigma, 0.25) == pytest.approx(d.arl0_rows_per_side)
    x = np.random.default_rng(11).standard_normal((rows, n_features))
    alarms = d.observe(x)
    expected = rows / ert_rows
    assert abs(len(alarms) / expected - 1.0) < tolerance, (len(alarms), expected)
    sides = {side for _, side, _, _ in alarms}
    assert sides == {"up", "down"} and d.alarm_count == len(alarms)
    assert {f for f, *_ in alarms} == set(range(n_features))


def test_threshold_grows_with_the_knob_and_the_feature_count():
    h1 = ChangeDetector([0.0], [1.0]).threshold_sigma
    h16 = ChangeDetector(np.zeros(16), np.ones(16)).threshold_sigma
    assert h1 == cusum_threshold(2e7, 0.25) and h16 == cusum_threshold(3.2e8, 0.25)
    assert 0 < h1 < h16
    # below the smallest ARL0 Siegmund's formula gives (h = 0), the threshold stays at 0
    assert cusum_threshold(1.0, 0.25) == 0.0


@pytest.mark.parametrize("shift, side", [(0.5, "up"), (-0.5, "down"), (2.0, "up")])
def test_a_shift_is_caught_within_a_few_hundred_rows(shift, side):
    rng = np.random.default_rng(5)
    d = ChangeDetector([10.0, -3.0], [2.0, 0.5])       # 16 features or 2: the same rule
    before = rng.normal([10.0, -3.0], [2.0, 0.5], size=(20_000, 2))
    assert d.observe(before) == []
    after = rng.normal([10.0 + 2.0 * shift, -3.0], [2.0, 0.5], size=(2000, 2))
    alarms = d.observe(after)
    feature, got_side, row, statistic = alarms[0]
    assert (feature, got_side) == (0, side)
    assert 0 < row - 20_000 < 400 and statistic > d.threshold_sigma
    assert d.state()[got_side][0] < d.threshold_sigma  # restarted at the alarm


def test_expected_delay_is_siegmunds():
    # with a persistent shift and restarts, alarms come every ARL(shift) rows on average
    d = ChangeDetector([0.0], [1.0])
    x = np.random.default_rng(8).standard_normal((1_000_000, 1)) + 0.5
    alarms = d.observe(x)
    expected = 1_000_000 / cusum_arl(d.threshold_sigma, 0.25, 0.5)
    assert abs(len(alarms) / expected - 1.0) < 0.05


def test_one_batch_and_small_batches_give_the_same_alarms():
    # 100k x 16 in one call: the GIL is released and, with ERT = 1 row (h = 2.6), ~1e5 alarms
    # against a first buffer of 96 records, so the buffer grows many times mid-batch
    rng = np.random.default_rng(2)
    x = rng.normal(size=(100_000, 16)).astype(np.float32)
    x[rng.random(x.shape) < 0.01] = np.nan
    for ert in (1.0, 50.0, 1e7):
        whole = ChangeDetector(np.zeros(16), np.ones(16), expected_rows_between_false_alarms=ert)
        parts = ChangeDetector(np.zeros(16), np.ones(16), expected_rows_between_false_alarms=ert)
        got = whole.observe(x)
        chunks = [a for s in range(0, len(x), 7) for a in parts.observe(x[s:s + 7])]
        assert got == chunks
        a, b = whole.state(), parts.state()
        for key in a:
            assert np.array_equal(a[key], b[key]), key
        assert a["nan_count"].sum() == np.isnan(x).sum() and a["rows_seen"] == len(x)
        if ert == 1.0:
            assert len(got) > 50_000


def test_zero_std_feature_alarms_on_any_departure_only():
    d = ChangeDetector([1.0, 0.0], [0.0, 1.0])
    assert d.observe(np.array([[1.0, 0.1]] * 1000)) == []
    assert d.observe(np.array([[1.0 + 1e-12, 0.0]])) == [(0, "up", 1001, float("inf"))]
    assert d.observe(np.array([[0.5, 0.0]])) == [(0, "down", 1002, float("inf"))]


def test_reset_forgets_everything_but_the_configuration():
    d = ChangeDetector([0.0], [1.0], expected_rows_between_false_alarms=10.0)
    d.observe(np.array([[3.0], [np.nan], [3.0], [3.0]]))
    assert d.rows_seen == 4 and d.alarm_count > 0 and d.state()["nan_count"][0] == 1
    h = d.threshold_sigma
    d.reset()
    s = d.state()
    assert (d.rows_seen, d.alarm_count, s["up"][0], s["down"][0], s["nan_count"][0]) == (0, 0, 0, 0, 0)
    assert d.threshold_sigma == h
