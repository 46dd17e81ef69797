"""Automatic rollback: the two-proportion test against scipy, the rules, and the rates — a real
accuracy regression rolls the candidate back within a measured number of labels, equal models
never do over many simulated runs."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from gateway.api.stats import LatencySummary, ModelStatsSnapshot, QualitySnapshot, Statistics
from gateway.config.model import RollbackConfig
from gateway.core.registry import ModelEntry, ModelRegistry, ModelVersion
from gateway.lifecycle.history import VersionHistory
from gateway.lifecycle.rollback import RollbackWatcher, judge, worse_share_p

NAN = float("nan")


@pytest.mark.parametrize("bad_a, n_a, bad_b, n_b", [(30, 200, 20, 200), (5, 1000, 40, 1000), (0, 50, 0, 50),
                                                     (120, 400, 80, 500)])
def test_the_two_proportion_p_value_is_scipy_s(bad_a, n_a, bad_b, n_b):
    pooled = (bad_a + bad_b) / (n_a + n_b)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    want = sps.norm.sf((bad_a / n_a - bad_b / n_b) / se) if se > 0 else 1.0
    assert worse_share_p(bad_a, n_a, bad_b, n_b) == pytest.approx(want, rel=1e-9)


def _snap(version: str, *, requests=0, error_share=0.0, p99=NAN, labels=0, accuracy=NAN) -> ModelStatsSnapshot:
    lat = LatencySummary(requests, NAN, NAN, p99, NAN)
    quality = QualitySnapshot("classifier", labels, labels, 0, 0, 0, 1.0, labels, accuracy, NAN, NAN, NAN) \
        if labels else None
    return ModelStatsSnapshot("m", version, requests, lat, lat, lat, 0.0, 0.0, error_share, 0.0, 1.0, NAN, [],
                              quality=quality)


def test_each_rule_needs_its_sample_its_margin_and_significance():
    cfg = RollbackConfig(enabled=True, max_p99_ratio=2.0)
    base = _snap("1", requests=1000, error_share=0.01, p99=10.0, labels=1000, accuracy=0.80)
    assert judge(cfg, base, _snap("2", requests=1000, error_share=0.01, p99=11.0, labels=1000, accuracy=0.80),
                 None) == []
    rules = [r for r, _ in judge(cfg, base, _snap("2", requests=1000, error_share=0.06, p99=25.0, labels=1000,
                                                  accuracy=0.70), None)]
    assert rules == ["error_rate", "p99", "accuracy"]
    assert judge(cfg, base, _snap("2", requests=100, error_share=0.5, p99=99.0, labels=100, accuracy=0.1),
                 None) == []                                         # below min_requests / min_labels
    assert judge(cfg, base, _snap("2", requests=1000, error_share=0.025, labels=1000, accuracy=0.76), None) == []


def _watcher(cfg: RollbackConfig, history=None) -> tuple[RollbackWatcher, ModelRegistry]:
    reg = ModelRegistry()
    reg.put(ModelEntry("m", {v: ModelVersion("m", v, None, None, None) for v in ("1", "2")}))  # type: ignore[arg-type]
    reg.set_weights("m", {"1": 1, "2": 1})
    reg.set_rollback("m", cfg)
    return RollbackWatcher(reg, lambda w: Statistics([], 0), history=history), reg


def _labels_until_rollback(rng, acc_base: float, acc_cand: float, cfg: RollbackConfig, max_labels: int,
                           step: int = 50, window: int = 1000) -> int | None:
    """Labels per version (both get the same) at the evaluation that rolled the candidate back."""
    watcher, reg = _watcher(cfg)
    base_hits, cand_hits = rng.random(max_labels) < acc_base, rng.random(max_labels) < acc_cand
    for n in range(step, max_labels + 1, step):
        w = min(n, window)
        stats = Statistics([_snap("1", labels=w, accuracy=float(base_hits[n - w:n].mean())),
                            _snap("2", labels=w, accuracy=float(cand_hits[n - w:n].mean()))], 0)
        if watcher.evaluate(stats):
            return n
    return None


def test_a_ten_point_accuracy_drop_rolls_back_within_the_documented_labels_and_equal_models_never_do():
    cfg = RollbackConfig(enabled=True)
    rng = np.random.default_rng(7)
    delays = [_labels_until_rollback(rng, 0.85, 0.75, cfg, 3000) for _ in range(40)]
    assert all(d is not None for d in delays), delays
    assert np.median(delays) <= 700 and max(delays) <= 1500, delays   # README: "within 1,500 labels"
    false = [_labels_until_rollback(rng, 0.80, 0.80, cfg, 5000) for _ in range(100)]
    assert false.count(None) == 100, [f for f in false if f is not None]  # 100 runs x 100 looks: none


def test_a_rollback_sets_the_candidate_s_weight_to_0_records_it_and_waits_for_a_new_weight(tmp_path):
    history = VersionHistory(tmp_path)
    watcher, reg = _watcher(RollbackConfig(enabled=True, consecutive=2), history)
    bad = Statistics([_snap("1", requests=500, error_share=0.0), _snap("2", requests=500, error_share=0.2)], 0)
    assert watcher.evaluate(bad) == []                                # the first look: hysteresis
    (r,) = watcher.evaluate(bad)
    assert (r.model, r.version, r.baseline, r.rule) == ("m", "2", "1", "error_rate")
    assert reg.weights("m") == {"1": 1.0, "2": 0.0} and reg.split("m").versions == ("1",)
    assert watcher.is_rolled_back("m", "2") and not watcher.is_rolled_back("m", "1")
    assert [(e.version, e.kind, e.source) for e in history.events("m")] == [("2", "rolled_back", "rollback")]
    assert watcher.evaluate(bad) == []                                # one version left: nothing to judge
    reg.set_weights("m", {"1": 1, "2": 1})                            # a new weight: judged afresh
    assert not watcher.is_rolled_back("m", "2")
