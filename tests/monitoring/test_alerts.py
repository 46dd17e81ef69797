"""Alert state machines with explicit times, the signals, and the webhook's bounded queue."""
from __future__ import annotations

import math

from gateway.api.stats import DriftSnapshot, LatencySummary, ModelStatsSnapshot, QualitySnapshot, Statistics
from gateway.config.alerts import AlertRule
from gateway.monitoring.alerts import MIN_LABELS, Evaluator, VersionFacts, Webhook

LAT = LatencySummary(100, 1.0, 2.0, 30.0, 40.0)


def _snap(model="m", version="1", error_share=0.0, latency=LAT, drift=None, quality=None) -> ModelStatsSnapshot:
    return ModelStatsSnapshot(model, version, 100, latency, latency, latency, 10.0, 10.0, error_share, 0.0,
                              1.0, math.nan, [], quality=quality, drift=drift)


def _stats(*models) -> Statistics:
    return Statistics(list(models), 0)


def _rule(**kw) -> AlertRule:
    base = {"name": "errors", "metric": "error_share", "comparator": ">", "threshold": 0.05, "for_s": 10,
            "severity": "critical", "labels": {"team": "ml"}}
    return AlertRule(**(base | kw))


def test_pending_then_firing_after_for_s_then_resolved():
    ev = Evaluator([_rule()])
    assert ev.evaluate(_stats(_snap(error_share=0.5)), 100.0, 1000.0) == []  # pending
    assert ev.pending == 1 and ev.active() == []
    assert ev.evaluate(_stats(_snap(error_share=0.5)), 109.0, 1009.0) == []
    [fired] = ev.evaluate(_stats(_snap(error_share=0.5)), 110.0, 1010.0)
    assert fired["status"] == "firing" and fired["rule"] == "errors" and fired["value"] == 0.5
    assert fired["labels"] == {"team": "ml"} and fired["severity"] == "critical"
    assert fired["firing_since_unix_s"] == 1010.0
    assert ev.evaluate(_stats(_snap(error_share=0.5)), 111.0) == []  # fires once
    [active] = ev.active()
    assert (active.rule, active.model, active.version, active.value) == ("errors", "m", "1", 0.5)
    [resolved] = ev.evaluate(_stats(_snap(error_share=0.0)), 120.0, 1020.0)
    assert resolved["status"] == "resolved" and resolved["firing_since_unix_s"] == 1010.0
    assert ev.active() == [] and ev.pending == 0


def test_a_blip_shorter_than_for_s_never_fires():
    ev = Evaluator([_rule()])
    ev.evaluate(_stats(_snap(error_share=0.5)), 0.0)
    assert ev.evaluate(_stats(_snap(error_share=0.0)), 5.0) == []  # pending dropped, no event
    assert ev.evaluate(_stats(_snap(error_share=0.5)), 6.0) == []
    assert ev.evaluate(_stats(_snap(error_share=0.5)), 15.0) == []  # the clock restarted at 6
    assert ev.evaluate(_stats(_snap(error_share=0.5)), 16.0)[0]["status"] == "firing"


def test_states_are_per_version_and_model_filter_and_gone_versions_resolve():
    ev = Evaluator([_rule(for_s=0), _rule(name="only_b", model="b", for_s=0)])
    events = ev.evaluate(_stats(_snap("a", error_share=1.0), _snap("b", error_share=1.0)), 0.0)
    assert sorted((e["rule"], e["model"]) for e in events) == [("errors", "a"), ("errors", "b"), ("only_b", "b")]
    events = ev.evaluate(_stats(_snap("b", error_share=1.0)), 1.0)  # a's version unloaded
    assert [(e["status"], e["model"], e["value"]) for e in events] == [("resolved", "a", None)]


def test_no_value_does_not_hold():
    ev = Evaluator([_rule(metric="p99_ms", threshold=10, for_s=0)])
    empty = LatencySummary(0, math.nan, math.nan, math.nan, math.nan)
    assert ev.evaluate(_stats(_snap(latency=empty)), 0.0) == []
    assert ev.evaluate(_stats(_snap()), 1.0)[0]["value"] == 30.0


def test_p99_over_deadline_uses_the_versions_deadline():
    rule = _rule(name="slow", metric="p99_over_deadline", threshold=1, for_s=0)
    assert Evaluator([rule], facts=lambda m, v: VersionFacts()).evaluate(_stats(_snap()), 0.0) == []
    [e] = Evaluator([rule], facts=lambda m, v: VersionFacts(deadline_ms=20)).evaluate(_stats(_snap()), 0.0)
    assert e["value"] == 1.5


def test_drift_and_change_alarms_in_the_window():
    def drift(alarms: int, alert: int = 0) -> DriftSnapshot:
        return DriftSnapshot("given", 1000, 500, 60.0, (), alert, 0, 16, change_alarms=alarms)

    ev = Evaluator([_rule(name="changes", metric="change_alarms", comparator=">=", threshold=2, for_s=0),
                    _rule(name="drift", metric="drift_features_alert", comparator=">=", threshold=1, for_s=0)],
                   window_s=60)
    assert ev.evaluate(_stats(_snap(drift=drift(5))), 0.0) == []  # alarms before: not new
    assert ev.evaluate(_stats(_snap(drift=drift(6))), 10.0) == []
    assert [e["rule"] for e in ev.evaluate(_stats(_snap(drift=drift(7, alert=1))), 20.0)] == ["changes", "drift"]
    # 80 s on, the alarms at 10 and 20 s have left the 60 s window
    assert [e["status"] for e in ev.evaluate(_stats(_snap(drift=drift(7))), 80.0)] == ["resolved", "resolved"]


def test_data_quality_and_outlier_signals():
    from gateway.api.stats import DriftMeasure

    nan = math.nan
    worst = DriftMeasure("x", 3, 0.4, 0.1, 0.2, 0.01, "alert", 500, nan_rate=0.25, inf_rate=0.0,
                         out_of_range_rate=0.1)
    d = DriftSnapshot("captured", 1000, 500, 60.0, (worst,), 1, 0, 15, outlier_rate=0.3, outlier_scored_rows=50)
    values = Evaluator([]).signals(_snap(drift=d), 0.0)
    assert (values["drift_psi_max"], values["nan_rate_max"], values["out_of_range_rate_max"],
            values["outlier_rate"]) == (0.4, 0.25, 0.1, 0.3)
    capturing = DriftSnapshot("capturing", 0, 0, 60.0, (), 0, 0, 0)
    assert "drift_features_alert" not in Evaluator([]).signals(_snap(drift=capturing), 0.0)


def _quality(accuracy: float, window: int = MIN_LABELS) -> QualitySnapshot:
    return QualitySnapshot("classifier", 1000, window, 0, 0, 0, 0.5, window, accuracy, 0.8, 0.8, 0.8)


def test_accuracy_drop_from_the_first_labelled_window_or_the_profile():
    rule = _rule(name="acc", metric="accuracy_drop", comparator=">=", threshold=0.05, for_s=0)
    ev = Evaluator([rule])
    assert ev.evaluate(_stats(_snap(quality=_quality(0.5, window=MIN_LABELS - 1))), 0.0) == []  # too few labels
    assert ev.evaluate(_stats(_snap(quality=_quality(0.90))), 1.0) == []  # the reference
    assert ev.evaluate(_stats(_snap(quality=_quality(0.87))), 2.0) == []
    [e] = ev.evaluate(_stats(_snap(quality=_quality(0.80))), 3.0)
    assert math.isclose(e["value"], 0.10)
    ev = Evaluator([rule], facts=lambda m, v: VersionFacts(reference_accuracy=0.99))
    assert math.isclose(ev.evaluate(_stats(_snap(quality=_quality(0.90))), 0.0)[0]["value"], 0.09)


def test_states_are_bounded():
    ev = Evaluator([_rule(for_s=0)], max_states=2)
    events = ev.evaluate(_stats(*(_snap(f"m{i}", error_share=1.0) for i in range(5))), 0.0)
    assert len(events) == 2 and ev.untracked == 3 and len(ev.active()) == 2


def test_webhook_queue_drops_the_oldest_and_counts():
    hook = Webhook("http://127.0.0.1:9/", max_queue=3)  # not started: nothing leaves the queue
    for i in range(10):
        hook.send({"rule": str(i)})
    assert hook.queued == 3 and hook.dropped == 7
    assert [e["rule"] for e in hook._queue] == ["7", "8", "9"]


def test_webhook_retries_with_backoff_until_delivered_and_gives_up_after_max_attempts():
    import http.server
    import json
    import threading
    import time

    bodies: list[dict] = []
    answers = iter([500, 503, 204, 500, 500, 500])

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(next(answers))
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook = Webhook(f"http://127.0.0.1:{server.server_address[1]}/", max_attempts=3, backoff_s=0.01)
    hook.start()
    try:
        hook.send({"rule": "a", "status": "firing"})
        hook.send({"rule": "b", "status": "firing"})
        deadline = time.monotonic() + 10
        while hook.delivered + hook.failed < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert (hook.delivered, hook.failed, hook.attempts) == (1, 1, 6)
        assert [b["rule"] for b in bodies] == ["a", "a", "a", "b", "b", "b"]
    finally:
        hook.stop()
        server.shutdown()
        server.server_close()


def test_events_are_logged_with_their_fields_and_handed_on(caplog):
    from gateway.config.alerts import AlertSettings
    from gateway.logs import JsonFormatter
    from gateway.monitoring.alerts import Alerts

    import json

    errors = [0.5]
    emitted: list[dict] = []
    alerts = Alerts(AlertSettings(defaults=False, rules=[_rule(for_s=0)]),
                    lambda window_s: _stats(_snap(error_share=errors[0])), emit=emitted.append)
    with caplog.at_level("INFO", logger="gateway.monitoring"):
        alerts.evaluate_now()
        errors[0] = 0.0
        alerts.evaluate_now()
    firing, resolved = (json.loads(JsonFormatter().format(r)) for r in caplog.records)
    assert firing["event"] == "alert.firing" and firing["level"] == "WARNING"
    assert firing["message"] == "alert errors firing: m@1 error_share 0.5 (rule: > 0.05, critical)"
    assert (firing["rule"], firing["model"], firing["version"], firing["labels"]) == ("errors", "m", "1", {"team": "ml"})
    assert resolved["event"] == "alert.resolved" and resolved["value"] == 0.0
    assert [e["status"] for e in emitted] == ["firing", "resolved"]
    assert alerts.listing().alerts == [] and alerts.evaluations == 2
