"""Scores a broken model can produce (inf, -inf, NaN, huge) must never corrupt memory."""
from __future__ import annotations

import numpy as np
import pytest

from gateway import kernels
from gateway.telemetry import Telemetry

ADVERSARIAL = np.array([
    [np.inf, 1.0, 2.0],
    [np.nan, 0.0, 1.0],
    [-np.inf, -np.inf, -np.inf],
    [np.inf, np.inf, 0.0],
    [1e30, 1e30, -1e30],
    [3e38, -3e38, 0.0],
    [-5.0, -7.0, -1.0],
], np.float32)


@pytest.mark.parametrize("logits", [False, True])
def test_non_finite_scores_are_recorded_safely(logits):
    telemetry = Telemetry()
    model = telemetry.register_model("m", "1", inputs={"x": 4}, classifier_classes=3, logits=logits)
    observer = telemetry.batch_observer(model, "scores", logits)
    for _ in range(50):  # repeated so an out-of-bounds histogram write would show
        observer.observe_batch({}, {"scores": ADVERSARIAL})
    top1, cls = kernels.top1(ADVERSARIAL, logits)
    assert top1.shape == (7,) and cls.shape == (7,)
    assert cls[1] == -1 and np.isnan(top1[1])  # NaN row is invalid
    conf = next(c for c in telemetry.confidence_stats() if c.model == "m")
    assert int(np.sum(conf.top1_hist)) == int(np.sum(conf.class_counts))
