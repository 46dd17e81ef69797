"""Per-version telemetry state: the batch observer (inputs always, scores for classifiers),
dynamic input widths, rebinning, and the histograms readers merge."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from gateway import kernels
from gateway.telemetry import InputBinning, Telemetry, freezer
from gateway.telemetry.models import BatchStats, ModelTelemetry


def _state(inputs, classes=None, binning=InputBinning()) -> ModelTelemetry:
    return ModelTelemetry(1, "m", "1", inputs, classes, False, None, 160, 1, 0, binning)


def _counts(state, name):
    return state.features[name].state()["count"].tolist()


def test_the_batch_observer_folds_every_input_and_a_classifier_s_scores():
    state = _state({"x": 2, "y": 1}, classes=3)
    BatchStats(state, "scores").observe_batch(
        {"x": np.ones((4, 2), np.float32), "y": np.zeros((4, 1), np.float32)},
        {"scores": np.array([[0.1, 0.8, 0.1]] * 4, np.float32), "other": np.zeros(4)})
    assert _counts(state, "x") == [4, 4] and _counts(state, "y") == [4]
    s = state.confidence.state()
    assert int(s["rows"]) == 4 and s["class_counts"].tolist() == [0, 4, 0]


def test_without_a_classifier_the_scores_output_is_not_looked_for():
    state = _state({"x": 2})
    assert state.confidence is None
    BatchStats(state, "scores").observe_batch({"x": np.ones((3, 2))}, {})   # no KeyError
    assert _counts(state, "x") == [3, 3]


def test_a_dynamic_width_is_taken_from_the_first_batch():
    state = _state({"seq": 0, "flat": 0})
    assert state.features == {}
    state.observe_inputs("seq", np.ones((2, 3, 2)))          # 3 x 2 features per row
    state.observe_inputs("flat", np.zeros((4, 0)))           # no features at all: nothing to keep
    assert "flat" not in state.features
    state.observe_inputs("flat", np.arange(5.0))             # a 1-D batch: one feature per row
    assert state.features["seq"].n_features == 6 and _counts(state, "seq") == [2] * 6
    assert state.features["flat"].n_features == 1 and _counts(state, "flat") == [5]
    with pytest.raises(ValueError, match="input 'z' was not registered for m"):
        state.observe_inputs("z", np.ones((1, 1)))


def test_rebin_restarts_the_statistics_with_the_new_bins_and_keeps_widths():
    state = _state({"x": 2})
    state.observe_inputs("x", np.random.default_rng(0).normal(size=(50, 2)))
    state.rebin(InputBinning(bins=4, ranges={"x": (0.0, 4.0)}))
    assert state.binning.bins == 4 and _counts(state, "x") == [0, 0]
    state.observe_inputs("x", np.array([[0.5, 3.5]]))
    s = state.features["x"].state()
    assert s["edges"][0].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert s["histogram"].tolist() == [[0, 1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 0]]   # underflow, 4 bins, overflow


def test_histograms_are_made_once_per_key_and_merged_per_kind():
    state = _state({})
    assert state.hist(0, "e2e", 1) is state.hist(0, "e2e", 1)
    state.hist(0, "e2e", 1).record_array(np.array([1.0, 2.0]))
    state.hist(14, "e2e", 2).record_array(np.array([4.0]))
    state.hist(0, "queue").record_array(np.array([8.0]))
    e2e = state.merged("e2e")
    assert e2e.count == 3 and e2e.sum == 7.0
    assert state.merged("queue").count == 1 and state.merged("compute").count == 0
    assert state.hist(0, "e2e", 1).count == 2                 # merging copies


def test_the_hub_registers_through_the_same_state():
    t = Telemetry()
    m = t.register_model("c", "1", inputs={"x": 3}, classifier_classes=2, labels=["no", "yes"])
    observer = t.batch_observer(m, "p", False)
    assert isinstance(observer, BatchStats)
    observer.observe_batch({"x": np.ones((2, 3))}, {"p": np.array([[0.9, 0.1], [0.2, 0.8]], np.float32)})
    (conf,) = t.confidence_stats()
    assert conf.labels == ["no", "yes"] and conf.class_counts.tolist() == [1, 1]


def _watched(ert: float = 1e7, profile=None, classes=None) -> ModelTelemetry:
    st = ModelTelemetry(1, "m", "1", {"features": 16}, classes, False, None, 64, 1, 0, InputBinning(), ert)
    st.reference = profile
    return st


def test_a_half_sigma_shift_in_one_of_16_features_alarms_on_it_within_a_few_hundred_rows_and_alone():
    st = _watched()
    rng = np.random.default_rng(5)
    for _ in range(100_000 // 50):                      # 10^5 rows in distribution, batches of 50
        st.observe_inputs("features", rng.standard_normal((50, 16)).astype(np.float32))
    assert st.change_alarms == 0                        # ERT 10^7: ~0.01 false alarms expected here
    shifted = 0
    while not st.change_alarms and shifted < 2000:
        x = rng.standard_normal((10, 16)).astype(np.float32)
        x[:, 3] += 0.5
        st.observe_inputs("features", x)
        shifted += 10
    assert st.change_alarms == 1 and shifted <= 400, shifted
    (alarm,) = st.changes
    assert (alarm.input, alarm.feature, alarm.side) == ("features", 3, "up")
    # the detector started with the batch that completed the 1024 reference rows (the 21st of 50)
    assert 100_000 - 1000 < alarm.row <= 100_000 - 1000 + shifted


def test_a_shift_that_persists_is_one_change_until_its_side_has_been_quiet_for_the_rearm_rows():
    from gateway.telemetry.models import CHANGE_REARM_ROWS
    st = _watched()
    rng = np.random.default_rng(9)
    st.observe_inputs("features", rng.standard_normal((2000, 16)).astype(np.float32))  # the reference rows
    assert st.change_alarms == 0

    def shifted(rows, by):
        x = rng.standard_normal((rows, 16)).astype(np.float32)
        x[:, 5] += by
        st.observe_inputs("features", x)

    shifted(20_000, 1.0)                        # re-alarms every ~45 rows: ~400 in all
    assert st.change_alarms == 1 and st.change_repeats > 100
    assert [(a.feature, a.side) for a in st.changes] == [(5, "up")]
    shifted(3000, -1.0)                         # the other side of the same feature: a change of its own
    assert st.change_alarms == 2 and [(a.feature, a.side) for a in st.changes][-1] == (5, "down")
    shifted(CHANGE_REARM_ROWS + 2000, 0.0)      # back in distribution for longer than the re-arm rows
    before = st.change_alarms
    shifted(2000, 1.0)                          # the same shift again: a new change
    assert st.change_alarms == before + 1 and st.changes[-1].side == "up"


def test_a_profile_s_moments_start_the_detector_at_once():
    ref = np.random.default_rng(6).standard_normal((5000, 16)) * 2.0 + 1.0
    from gateway.config.profile import OutputProfile, ReferenceProfile
    from gateway.monitoring.profile import feature_profile
    profile = ReferenceProfile("m", "1", 5000, {"features": feature_profile(ref, 10)}, OutputProfile("none"))
    st = _watched(profile=profile)
    rng = np.random.default_rng(7)
    st.observe_inputs("features", (rng.standard_normal((300, 16)) * 2.0 + 1.0).astype(np.float32))
    assert st.change_alarms == 0 and st._watches["features"].source == "given"
    st.observe_inputs("features", (rng.standard_normal((300, 16)) * 2.0 - 1.0).astype(np.float32))  # -1 sd
    assert st.change_alarms >= 16 and {a.side for a in st.changes} == {"down"}


def test_the_confidence_has_a_detector_too_and_change_detection_can_be_off():
    st = _watched(classes=3)
    rng = np.random.default_rng(8)

    def scores(n, boost):
        s = np.abs(rng.standard_normal((n, 3))) + np.array([boost, 0.5, 0.5])
        return (s / s.sum(1, keepdims=True)).astype(np.float32)

    for _ in range(40):
        st.observe_scores(scores(50, 0.5))
    assert st.change_alarms == 0 and st._watches[""].source == "captured"
    for _ in range(20):
        st.observe_scores(scores(50, 3.0))                  # far more confident now
    assert st.change_alarms >= 1 and st.changes[0].input == "" and st.changes[0].side == "up"
    off = _watched(ert=0.0, classes=3)
    for _ in range(40):
        off.observe_scores(scores(50, 3.0))
    assert off.change_alarms == 0 and off._watches == {}


def test_rebin_restarts_the_detectors():
    st = _watched()
    rng = np.random.default_rng(9)
    st.observe_inputs("features", rng.standard_normal((2000, 16)))
    assert st._watches["features"].detector is not None
    st.rebin(InputBinning(bins=5))
    assert st._watches == {}


def test_a_feature_constant_in_the_reference_is_not_watched_and_floods_nothing():
    st = _watched(classes=3)
    x = np.random.default_rng(10).standard_normal((2000, 16))
    x[:, 7] = 1.0                                             # constant while the reference is taken
    st.observe_inputs("features", x)
    st.observe_scores(np.full((2000, 3), 1 / 3, np.float32))  # a constant confidence: not watched either
    assert st._watches["features"].unwatched == 1 and st._watches[""].unwatched == 1
    y = np.random.default_rng(11).standard_normal((5000, 16))  # feature 7 varies now
    st.observe_inputs("features", y)
    st.observe_scores(np.full((5000, 3), 1 / 3, np.float32))
    assert st.change_alarms == 0


def test_the_outlier_rate_scores_rows_by_the_version_s_own_thresholds():
    from gateway.config.profile import OutputProfile, ReferenceProfile
    from gateway.monitoring.profile import feature_profile
    ref = np.random.default_rng(10).standard_normal((5000, 16))
    profile = ReferenceProfile("m", "1", 5000, {"features": feature_profile(ref, 10)}, OutputProfile("none"))
    x = np.zeros((10, 16), np.float32)
    x[:, 2] = 6.0                         # outside the reference's range; robust z about 6

    def outliers(thresholds):
        st = _watched(profile=profile)
        if thresholds is not None:
            st.outlier_max_out_of_range, st.outlier_max_robust_z = thresholds
        st.observe_inputs("features", x)
        return st.outlier_rows, st.outlier_scored_rows

    assert outliers(None) == (10, 10)      # policy.outliers' defaults: no feature out of range
    assert outliers((1, None)) == (0, 10)  # one feature out allowed, z not checked
    assert outliers((1, 4.0)) == (10, 10)  # z above 4
    assert outliers((1, 8.0)) == (0, 10)


def test_a_wide_input_buffers_at_most_warmup_max_values_before_its_edges_freeze():
    from gateway.telemetry.models import WARMUP_MAX_VALUES, WARMUP_MIN_ROWS, warmup_rows
    assert warmup_rows(1024, 16) == 1024
    assert warmup_rows(1024, 4096) == 1024 == WARMUP_MAX_VALUES // 4096
    assert warmup_rows(1024, 3 * 224 * 224) == WARMUP_MIN_ROWS     # 27 rows would fit: never fewer than 32
    assert warmup_rows(1024, 8192) == 512 and warmup_rows(100, 8192) == 100
    st = ModelTelemetry(1, "m", "1", {"image": 8192}, None, False, None, 64, 1, 0, InputBinning())
    st.observe_inputs("image", np.random.default_rng(0).normal(size=(511, 8192)).astype(np.float32))
    assert st.features["image"].edges is None                       # still warming up
    st.observe_inputs("image", np.zeros((1, 8192), np.float32))
    assert freezer.drain()
    with st.feature_lock:
        st.adopt_frozen()
    assert st.features["image"].edges is not None                   # frozen at 512 rows, not 1,024


def test_the_freeze_runs_on_the_freezer_thread_and_ends_as_an_inline_one():
    """The batch that fills the warm-up only hands the freeze set to the freezer thread, which
    takes no lock; the next batch installs its result. The statistics (a batch observed while
    the freezer worked included) equal an accumulator that froze inline."""
    rng = np.random.default_rng(3)
    batches = [rng.normal(size=(n, 64)).astype(np.float32) for n in (600, 500, 300, 50)]
    st = ModelTelemetry(1, "m", "1", {"x": 64}, None, False, None, 64, 1, 0, InputBinning())
    fs = st.features["x"]
    assert fs.defer_freeze
    inline = kernels.FeatureStats(64, n_bins=10, warmup_rows=1024)
    for x in batches[:2]:
        inline.observe(x)
    with st.feature_lock:  # the freezer runs while this lock is held: it never takes it
        for x in batches[:2]:
            fs.observe(x)
        st._freeze_later(fs)
        fs.observe(batches[2])
        inline.observe(batches[2])
        assert freezer.drain()
        assert fs.freeze_due and fs.edges is None and len(st._frozen) == 1   # done, not installed
    assert "gateway-freeze" in {t.name.rsplit("_", 1)[0] for t in threading.enumerate()}
    st.observe_inputs("x", batches[3])   # installs the edges, then observes
    inline.observe(batches[3])
    assert fs.edges is not None and not st._freezing and not st._frozen
    a, b = fs.state(), inline.state()
    for key in ("count", "mean", "m2", "min", "max", "edges", "histogram"):
        assert np.array_equal(a[key], b[key]), key


def test_readers_install_finished_freezes_without_traffic():
    class Binning:
        bins, warmup_rows, ranges = 10, 8, {}

    hub = Telemetry()
    st = hub.model(hub.register("m", "1", inputs={"x": 4}, classes=None, logits=False, labels=None,
                                input_stats=Binning(), profile=None))
    st.observe_inputs("x", np.arange(32.0).reshape(8, 4))
    assert freezer.drain() and st.features["x"].edges is None
    (snap,) = hub.feature_stats()
    assert snap.edges is not None and snap.histogram.sum() == 32


def test_a_failed_freeze_is_logged_once_and_observe_freezes_at_twice_the_warmup(caplog):
    st = ModelTelemetry(1, "m", "1", {"x": 4}, None, False, None, 64, 1, 0, InputBinning(warmup_rows=8))
    fs = st.features["x"]

    class Broken:
        freeze_due = True

        def freeze_pending(self):
            return 1, [np.zeros((8, 4))]

        def freeze_part(self, batches):
            raise RuntimeError("boom")

    broken = Broken()
    with caplog.at_level("ERROR", logger="gateway.telemetry"):
        with st.feature_lock:
            st._freezing[id(fs)] = None  # as a failed freeze of fs leaves it
            st._freeze_later(broken)
        assert freezer.drain()
    with st.feature_lock:
        st.adopt_frozen()
    assert caplog.text.count("freezing input statistics' bin edges failed") == 1
    assert st._freezing == {id(fs): None, id(broken): None}
    st.observe_inputs("x", np.ones((8, 4)))
    assert freezer.drain() and fs.freeze_due and fs.edges is None   # not queued again
    st.observe_inputs("x", np.ones((8, 4)))
    assert fs.edges is not None and fs.state()["histogram"].sum() == 16 * 4   # observe froze it
