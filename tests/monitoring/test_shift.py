import time

import numpy as np

from gateway.monitoring import MeanShift
from gateway.telemetry import Telemetry


def test_the_feature_whose_recent_mean_moved_ranks_first():
    shifts = MeanShift(window_s=60.0)
    t = Telemetry(periodic=(shifts.tick,))
    m = t.register_model("c", "1", inputs={"x": 4})
    rng = np.random.default_rng(0)
    observe = t.batch_observer(m, None, False).observe_batch
    observe({"x": rng.normal(size=(256, 4))}, {})
    shifts.rotate(t.models(), time.monotonic_ns())
    shifted = rng.normal(size=(256, 4))
    shifted[:, 2] += 5
    observe({"x": shifted}, {})
    (s,) = [s for s in t.snapshot(shifts=shifts.top_shifts) if s.model == "c"]
    assert s.top_shifts[0].feature == 2 and s.top_shifts[0].shift_score > 3
    assert all(f.shift_score < 1 for f in s.top_shifts[1:])


def test_no_scores_before_the_first_window_or_after_statistics_restart():
    shifts = MeanShift(window_s=60.0)
    t = Telemetry(periodic=(shifts.tick,))
    m = t.register_model("c", "1", inputs={"x": 2})
    observe = t.batch_observer(m, None, False).observe_batch
    observe({"x": np.ones((8, 2))}, {})
    t.flush()  # the first tick starts the window; no reference yet
    assert shifts.top_shifts(t.model(m)) == []
    shifts.rotate(t.models(), time.monotonic_ns())
    observe({"x": np.ones((8, 2))}, {})
    assert [f.shift_score for f in shifts.top_shifts(t.model(m))] == [0.0, 0.0]
    from gateway.telemetry import InputBinning

    t.register_model("c", "1", inputs={"x": 2}, input_binning=InputBinning(bins=4))  # restarts the statistics
    assert shifts.top_shifts(t.model(m)) == []


def test_the_window_rotates_on_the_aggregator_tick():
    shifts = MeanShift(window_s=0.0)
    t = Telemetry(periodic=(shifts.tick,))
    m = t.register_model("c", "1", inputs={"x": 1})
    observe = t.batch_observer(m, None, False).observe_batch
    observe({"x": np.arange(4.0)[:, None]}, {})
    t.flush()
    assert shifts.top_shifts(t.model(m)) == []
    t.flush()  # second tick: a window of 0 s has elapsed, so the reference is taken
    observe({"x": np.full((4, 1), 1.5)}, {})
    (f,) = shifts.top_shifts(t.model(m))
    assert f.feature == 0 and f.shift_score == 0.0 and f.mean == 1.5
