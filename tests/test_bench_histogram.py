"""bench/histogram.py: percentiles within the stated relative error of numpy's, merging exact."""
from __future__ import annotations

import numpy as np
import pytest

from bench.histogram import RELATIVE_ERROR, Histogram


def _exact(values: np.ndarray, q: float) -> float:
    """The sample value at rank ceil(q * n), the rank the histogram reads."""
    s = np.sort(values)
    return float(s[max(1, int(np.ceil(q * len(s)))) - 1])


@pytest.mark.parametrize("seed", range(5))
def test_quantiles_are_within_the_relative_error_of_the_sample_quantiles(seed):
    rng = np.random.default_rng(seed)
    values = np.concatenate([rng.lognormal(13, 1.0, 20_000), rng.lognormal(17, 0.5, 200)]).astype(np.int64)
    h = Histogram()
    for v in values:
        h.record(int(v))
    for q in (0.5, 0.9, 0.99, 0.999, 1.0):
        exact = _exact(values, q)
        assert abs(h.quantile_ns(q) - exact) <= RELATIVE_ERROR * exact + 1e-9, q
    assert h.count == len(values) and h.max_ns == values.max()


def test_merged_histograms_equal_one_histogram_of_all_values_and_survive_json():
    rng = np.random.default_rng(9)
    parts = [rng.integers(1_000, 10**9, 5_000) for _ in range(3)]
    whole, pieces = Histogram(), []
    for part in parts:
        h = Histogram()
        for v in part:
            h.record(int(v))
            whole.record(int(v))
        pieces.append(Histogram.from_json(h.to_json()))
    merged = Histogram.merged(pieces)
    assert merged.buckets == whole.buckets
    assert (merged.count, merged.max_ns, merged.sum_ns) == (whole.count, whole.max_ns, whole.sum_ns)
    assert merged.summary_ms() == whole.summary_ms()


def test_an_empty_histogram_reports_zeros():
    assert Histogram().summary_ms() == {"p50_ms": 0.0, "p90_ms": 0.0, "p99_ms": 0.0, "p999_ms": 0.0,
                                        "max_ms": 0.0, "mean_ms": 0.0}
