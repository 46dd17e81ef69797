from __future__ import annotations

import pytest

from gateway.config.settings import SettingsError, load_settings


def test_defaults_match_the_documented_cli_defaults(monkeypatch):
    for key in ("GATEWAY_PORT", "GATEWAY_HOST", "GATEWAY_TELEMETRY__ENABLED"):
        monkeypatch.delenv(key, raising=False)
    s = load_settings()
    assert (s.host, s.port, s.model_repository) == ("127.0.0.1", 8001, None)


def test_precedence_file_then_environment_then_flags(tmp_path, monkeypatch):
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text("port: 7000\ngrace_period_s: 3\ntelemetry:\n  ring_capacity: 4096\n")
    monkeypatch.setenv("GATEWAY_PORT", "7100")
    monkeypatch.setenv("GATEWAY_TELEMETRY__AGGREGATE_INTERVAL_S", "0.5")
    s = load_settings(cfg)
    assert (s.port, s.grace_period_s, s.telemetry.ring_capacity, s.telemetry.aggregate_interval_s) == \
        (7100, 3.0, 4096, 0.5)
    assert load_settings(cfg, port=7200).port == 7200


def test_unknown_key_in_file_is_named(tmp_path):
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text("telemetry:\n  ring_capacty: 10\n")
    with pytest.raises(SettingsError, match=r"telemetry\.ring_capacty: unknown key"):
        load_settings(cfg)


def test_bad_environment_value_is_named(monkeypatch):
    monkeypatch.setenv("GATEWAY_GRACE_PERIOD_S", "-1")
    with pytest.raises(SettingsError, match=r"grace_period_s: Input should be greater than or equal to 0"):
        load_settings()


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(SettingsError, match="not found"):
        load_settings(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("port: [1,\n")
    with pytest.raises(SettingsError, match="invalid YAML"):
        load_settings(bad)
