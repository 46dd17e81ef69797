"""A worker's statistics share survives the JSON between workers unchanged."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest

from gateway.telemetry import Telemetry
from gateway.workers import codec
from tests.telemetry.records import record


def test_a_share_round_trips():
    t = Telemetry()
    m = t.register_model("mlp", "1", inputs={})
    t.register_model("idle", "1", inputs={})
    now = time.monotonic_ns() - 20_000_000   # the last answer is now, none in the future
    for i in range(20):
        record(t, m, t_received_ns=now, t_enqueued_ns=now + 100, t_compute_start_ns=now + 1_000,
               t_compute_end_ns=now + 500_000, t_responded_ns=now + 1_000_000 * (i + 1), batch_size=2, rows=2,
               status=14 if i % 5 == 0 else 0, confidence=0.5)
    t.flush()
    share = codec.loads(codec.dumps(_share(t)))
    original = _share(t)
    assert (share.ring_drops, share.feedback_unknown) == (3, 7)
    assert share.rejected == original.rejected and len(share.rejected) == 2
    assert len(share.parts) == 2
    for got, want in zip(share.parts, original.parts):
        for name in ("latency", "queue", "compute"):
            g, w = getattr(got, name), getattr(want, name)
            if w is None:
                assert g is None
                continue
            assert (g.lo, g.hi) == (w.lo, w.hi) or (math.isnan(g.lo) and math.isnan(w.lo))
            assert np.array_equal(g.histogram.bucket_counts, w.histogram.bucket_counts)
            assert (g.histogram.scale, g.histogram.offset, g.histogram.count) == \
                (w.histogram.scale, w.histogram.offset, w.histogram.count)
        assert (got.model, got.requests, got.window_errors, got.batch_sum, got.conf_n) == \
            (want.model, want.requests, want.window_errors, want.batch_sum, want.conf_n)
        assert got.totals == want.totals and want.totals is not None
    assert share.parts[1].latency is None  # (the idle version)


def _share(t):
    from gateway.api.stats import Rejected
    from gateway.telemetry.readers import StatsShare

    return StatsShare(t.window_parts(10.0), 3, 7, (Rejected("", "", "NOT_FOUND", "unknown_model", 5),
                                                   Rejected("mlp", "1", "INVALID_ARGUMENT", "shape", 2)))


def test_a_text_it_did_not_write_is_refused():
    with pytest.raises((ValueError, KeyError, TypeError)):
        codec.loads('{"parts": [{"model": "m"}], "ring_drops": 0, "feedback_unknown": 0}')
    with pytest.raises(ValueError):
        codec.loads("not json")
