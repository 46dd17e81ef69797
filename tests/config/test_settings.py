from __future__ import annotations

import os

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
    with pytest.raises(SettingsError, match=r"GATEWAY_GRACE_PERIOD_S: Input should be greater than or equal to 0"):
        load_settings()


def test_each_error_is_named_where_it_was_given(tmp_path, monkeypatch):
    """A flag as the flag, a variable as the variable, a file key with the file: the source with
    the highest precedence that gives the value is the one to blame."""
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text("admin_port: 99999\ngrace_period_s: -2\ntelemetry:\n  ring_capacity: 1\n")
    monkeypatch.setenv("GATEWAY_GRACE_PERIOD_S", "-1")                 # overrides the file's -2
    monkeypatch.setenv("gateway_telemetry__histogram_max_buckets", "2")  # read case-insensitively
    with pytest.raises(SettingsError) as err:
        load_settings(cfg, flags=True, port=70000)
    lines = str(err.value).splitlines()
    assert lines[0] == "invalid configuration:"
    assert sorted(line.split(":")[0].strip() for line in lines[1:]) == sorted([
        "--port", f"{cfg}", "GATEWAY_GRACE_PERIOD_S", f"{cfg}", "gateway_telemetry__histogram_max_buckets"])
    assert "  --port: Input should be less than or equal to 65535 (got 70000)" in lines
    assert f"  {cfg}: admin_port: Input should be less than or equal to 65535 (got 99999)" in lines
    assert f"  {cfg}: telemetry.ring_capacity: Input should be greater than or equal to 1024 (got 1)" in lines
    assert "environment" not in str(err.value)
    with pytest.raises(SettingsError, match=r"(?m)^  port: Input should be less"):  # overrides, not flags
        load_settings(port=70000)


def test_unknown_top_level_variables_are_refused_naming_them(monkeypatch):
    monkeypatch.setenv("GATEWAY_ADMINPORT", "1")
    monkeypatch.setenv("GATEWAY_NO_SUCH__THING", "1")
    monkeypatch.setenv("gateway_telemetri__enabled", "false")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert str(err.value).splitlines()[1:] == [
        "  GATEWAY_ADMINPORT: unknown setting (did you mean GATEWAY_ADMIN_PORT?)",
        "  GATEWAY_NO_SUCH__THING: unknown setting",
        "  gateway_telemetri__enabled: unknown setting (did you mean GATEWAY_TELEMETRY?)",
    ]
    monkeypatch.delenv("GATEWAY_ADMINPORT")
    monkeypatch.delenv("GATEWAY_NO_SUCH__THING")
    monkeypatch.delenv("gateway_telemetri__enabled")
    monkeypatch.setenv("GATEWAY_TELEMETRY__ENABLD", "false")  # nested: pydantic names it (as before)
    with pytest.raises(SettingsError, match=r"GATEWAY_TELEMETRY__ENABLD: unknown key"):
        load_settings()


def test_variables_that_are_not_settings_are_left_alone(monkeypatch):
    """The kernel build's switches and the client commands' address may be exported in the
    shell that starts the server."""
    from gateway.config.settings import OTHER_VARIABLES, unknown_environment

    assert {"GATEWAY_DEBUG_BUILD", "GATEWAY_SANITIZE", "GATEWAY_CYTHON_ANNOTATE", "GATEWAY_ADDRESS"} == OTHER_VARIABLES
    for name in OTHER_VARIABLES:
        monkeypatch.setenv(name, "1")
    assert unknown_environment(dict(os.environ)) == []
    assert load_settings(port=0).port == 0


def test_a_variable_that_is_not_json_is_named(monkeypatch):
    monkeypatch.setenv("GATEWAY_TELEMETRY", "{not json")
    with pytest.raises(SettingsError, match=r"GATEWAY_TELEMETRY: not valid JSON"):
        load_settings()


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(SettingsError, match="not found"):
        load_settings(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("port: [1,\n")
    with pytest.raises(SettingsError, match="invalid YAML"):
        load_settings(bad)


def test_the_inflight_bound_follows_the_message_limit_and_must_hold_one_message(monkeypatch):
    for key in ("GATEWAY_MAX_INFLIGHT_BYTES", "GATEWAY_MAX_MESSAGE_BYTES"):
        monkeypatch.delenv(key, raising=False)
    assert load_settings().max_inflight_bytes == 4 * 64 * 1024 * 1024
    assert load_settings(max_message_bytes=1 << 20).max_inflight_bytes == 4 << 20
    assert load_settings(max_inflight_bytes=0).max_inflight_bytes == 0                  # no bound
    assert load_settings(max_message_bytes=1 << 20, max_inflight_bytes=1 << 20).max_inflight_bytes == 1 << 20
    monkeypatch.setenv("GATEWAY_MAX_INFLIGHT_BYTES", str((1 << 20) - 1))
    with pytest.raises(SettingsError, match=r"GATEWAY_MAX_INFLIGHT_BYTES: Value error, less than max_message_bytes "
                                            r"\(1048576\): a request that fits a message could never be admitted"):
        load_settings(max_message_bytes=1 << 20)


@pytest.mark.parametrize("value, ok", [(0, True), (64 << 10, True), (32 << 20, True), (4096, False),
                                       ((32 << 20) + 1, False), (-1, False)])
def test_the_mmap_threshold_is_off_or_within_what_glibc_takes(value, ok):
    if ok:
        assert load_settings(malloc_mmap_threshold_bytes=value).malloc_mmap_threshold_bytes == value
    else:
        with pytest.raises(SettingsError, match=r"malloc_mmap_threshold_bytes: "):
            load_settings(malloc_mmap_threshold_bytes=value)


def test_a_capture_needs_somewhere_to_write(tmp_path):
    cfg = tmp_path / "g.yaml"
    cfg.write_text("capture: {enabled: true}\n")
    with pytest.raises(SettingsError, match="capture.enabled needs capture.directory or state_dir"):
        load_settings(cfg)
    cfg.write_text(f"state_dir: {tmp_path}\ncapture:\n  enabled: true\n  inputs: {{m: {{x: {{mask: [0, 2]}}}}}}\n")
    s = load_settings(cfg)
    assert s.capture.inputs["m"]["x"].mask == [0, 2] and s.capture.default_inputs == "drop"
    cfg.write_text("capture: {inputs: {m: {x: sometimes}}}\n")
    with pytest.raises(SettingsError, match="capture.inputs"):
        load_settings(cfg)


def test_the_admin_token_comes_from_the_environment_or_a_file_and_is_never_shown(tmp_path, monkeypatch):
    monkeypatch.delenv("GATEWAY_ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("GATEWAY_ADMIN_TOKEN_FILE", raising=False)
    assert load_settings().admin_secret() is None
    monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", "s3cret")
    s = load_settings()
    assert s.admin_secret() == "s3cret"
    assert "s3cret" not in repr(s) and "s3cret" not in str(s.model_dump()) and "s3cret" not in s.model_dump_json()
    path = tmp_path / "token"
    path.write_text("fr0m-file\nignored\n")
    with pytest.raises(SettingsError, match="both set"):
        load_settings(admin_token_file=path)
    monkeypatch.delenv("GATEWAY_ADMIN_TOKEN")
    assert load_settings(admin_token_file=path).admin_secret() == "fr0m-file"
    path.write_text("\n")
    with pytest.raises(SettingsError, match="holds no token"):
        load_settings(admin_token_file=path)
    with pytest.raises(SettingsError, match="cannot read"):
        load_settings(admin_token_file=tmp_path / "missing")
    monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", " ")
    with pytest.raises(SettingsError, match="GATEWAY_ADMIN_TOKEN"):
        load_settings()


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="per-thread CPU affinity is Linux's")
def test_execution_cpus_must_be_cpus_this_process_may_use(monkeypatch):
    monkeypatch.delenv("GATEWAY_EXECUTION_CPUS", raising=False)
    allowed = sorted(os.sched_getaffinity(0))
    assert load_settings().execution_cpus is None
    assert load_settings(execution_cpus=[allowed[0], allowed[0]]).execution_cpus == [allowed[0]]
    monkeypatch.setenv("GATEWAY_EXECUTION_CPUS", f"[{allowed[-1]}]")
    assert load_settings().execution_cpus == [allowed[-1]]
    monkeypatch.setenv("GATEWAY_EXECUTION_CPUS", "[4095]")
    if 4095 not in allowed:
        with pytest.raises(SettingsError, match=r"GATEWAY_EXECUTION_CPUS: Value error, CPUs 4095 are not among "
                                                r"those this process may use \([0-9,-]+\)"):
            load_settings()
    monkeypatch.setenv("GATEWAY_EXECUTION_CPUS", "[]")
    with pytest.raises(SettingsError, match="GATEWAY_EXECUTION_CPUS"):
        load_settings()
    monkeypatch.setenv("GATEWAY_EXECUTION_CPUS", "[-1]")
    with pytest.raises(SettingsError, match="GATEWAY_EXECUTION_CPUS"):
        load_settings()
