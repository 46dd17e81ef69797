"""Alert settings: rules validated with errors that say what is allowed; the defaults."""
from __future__ import annotations

import pytest

from gateway.config.alerts import DEFAULT_RULES, METRICS, AlertSettings
from gateway.config.errors import SettingsError
from gateway.config.settings import load_settings


def test_unknown_metric_names_the_allowed_ones():
    with pytest.raises(SettingsError) as info:
        load_settings(alerts={"rules": [{"name": "x", "metric": "p99", "threshold": 1}]})
    text = str(info.value)
    assert "alerts.rules.0.metric" in text and "unknown metric 'p99'" in text and "p99_over_deadline" in text


@pytest.mark.parametrize("rule, words", [
    ({"name": "x", "metric": "p99_ms", "threshold": 1, "comparator": "=="}, "comparator"),
    ({"name": "x", "metric": "p99_ms", "threshold": 1, "severity": "page"}, "severity"),
    ({"name": "x", "metric": "p99_ms", "threshold": 1, "for_s": -1}, "for_s"),
    ({"name": "x", "metric": "p99_ms", "threshold": float("nan")}, "threshold"),
    ({"name": "x y", "metric": "p99_ms", "threshold": 1}, "name"),
    ({"name": "x", "metric": "p99_ms", "threshold": 1, "labels": {"1bad": "v"}}, "label name"),
    ({"name": "x", "metric": "p99_ms", "threshold": 1, "labels": {f"k{i}": "v" for i in range(17)}}, "at most 16"),
])
def test_bad_rules_are_refused(rule, words):
    with pytest.raises(SettingsError, match=words):
        load_settings(alerts={"rules": [rule]})


def test_webhook_url_must_be_http():
    for url in ("ftp://host/x", "file:///etc/passwd", "http://", "localhost:80"):
        with pytest.raises(SettingsError, match="webhook_url"):
            load_settings(alerts={"webhook_url": url})
    assert load_settings(alerts={"webhook_url": "https://hooks.example/a"}).alerts.webhook_url


def test_duplicate_names_refused_and_defaults_replaced_by_name():
    with pytest.raises(SettingsError, match="two rules named"):
        load_settings(alerts={"rules": [{"name": "a", "metric": "p99_ms", "threshold": 1}] * 2})
    settings = AlertSettings(rules=[{"name": "error_rate", "metric": "error_share", "threshold": 0.5}])
    rules = {r.name: r for r in settings.in_force()}
    assert set(rules) == {r.name for r in DEFAULT_RULES} and rules["error_rate"].threshold == 0.5
    assert AlertSettings(defaults=False).in_force() == []
    assert {r.metric for r in DEFAULT_RULES} <= set(METRICS)


def test_defaults_for_s_sets_the_default_rules_for_s_only():
    own = {"name": "mine", "metric": "p99_ms", "threshold": 1, "for_s": 7}
    settings = load_settings(alerts={"defaults_for_s": 0.5, "rules": [own]}).alerts
    rules = {r.name: r for r in settings.in_force()}
    assert {r.for_s for name, r in rules.items() if name != "mine"} == {0.5} and rules["mine"].for_s == 7
    assert {r.name: r.for_s for r in AlertSettings().in_force()} == \
        {"drift": 60, "accuracy_drop": 300, "error_rate": 60, "p99_over_deadline": 60, "rollback": 0}
    with pytest.raises(SettingsError, match="defaults_for_s"):
        load_settings(alerts={"defaults_for_s": -1})
