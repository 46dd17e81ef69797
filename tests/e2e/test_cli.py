"""The CLI as a user runs it, against a real `gateway serve` process."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from tests.conftest import free_port


def _gateway(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def served(repo):
    port, admin_port = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--model-repository", str(repo),
                             "--port", str(port), "--admin-port", str(admin_port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "GATEWAY_RELOAD_INTERVAL_S": "0"})  # only SIGHUP reloads
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(proc.stdout.read())
        if _gateway("models", "--address", address).returncode == 0:
            break
        time.sleep(0.2)
    proc.admin_port = admin_port
    yield address, proc, repo
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_models_and_predict_with_each_input_kind(served, tmp_path):
    address, _, _ = served
    listing = _gateway("models", "--address", address)
    assert listing.returncode == 0
    names = [l.split()[0] for l in listing.stdout.splitlines() if not l.startswith("#")]
    assert names == ["classifier", "regressor", "wide_mlp"]

    random = json.loads(_gateway("predict", "--model", "classifier", "--address", address).stdout)
    assert random["served_by"] == "classifier@1" and random["predicted_label"][0] in ("approve", "review", "decline")

    x = np.arange(16, dtype=np.float32).reshape(1, 16) / 16
    np.save(tmp_path / "x.npy", x)
    from_npy = json.loads(_gateway("predict", "--model", "classifier", "--address", address,
                                   "--input", str(tmp_path / "x.npy")).stdout)
    (tmp_path / "x.json").write_text(json.dumps({"features": x.tolist()}))
    from_json = json.loads(_gateway("predict", "--model", "classifier", "--address", address,
                                    "--input", str(tmp_path / "x.json")).stdout)
    assert from_npy["outputs"] == from_json["outputs"]


def test_admin_port_flag(served):
    _, proc, _ = served
    base = f"http://127.0.0.1:{proc.admin_port}"
    deadline = time.monotonic() + 30
    while True:  # /readyz says 503 until the models are loaded (gRPC answers before that)
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=10) as resp:
                assert resp.status == 200
                break
        except urllib.error.HTTPError as exc:
            assert exc.code == 503 and time.monotonic() < deadline, exc
            time.sleep(0.1)
    with urllib.request.urlopen(base + "/metrics", timeout=10) as resp:
        assert b"gateway_" in resp.read()


def test_predict_reports_bad_input_and_unknown_model(served, tmp_path):
    address, _, _ = served
    (tmp_path / "bad.json").write_text(json.dumps({"features": [[1.0, 2.0]]}))
    bad = _gateway("predict", "--model", "classifier", "--address", address, "--input", str(tmp_path / "bad.json"))
    assert bad.returncode == 1 and "INVALID_ARGUMENT" in bad.stderr and "dimension 1 expected 16, got 2" in bad.stderr
    missing = _gateway("predict", "--model", "nope", "--address", address)
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr


def test_sighup_reloads_the_repository(served):
    address, proc, repo = served
    shutil.copytree(repo / "regressor" / "1", repo / "regressor" / "2")
    proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        out = _gateway("predict", "--model", "regressor", "--address", address)
        if json.loads(out.stdout)["served_by"] == "regressor@2":
            break
        time.sleep(0.2)
    assert json.loads(out.stdout)["served_by"] == "regressor@2"


def test_bad_config_exits_2_naming_the_key(tmp_path):
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text("prot: 9000\n")
    out = _gateway("serve", "--config", str(cfg))
    assert out.returncode == 2 and "prot: unknown key" in out.stderr


def test_missing_repository_exits_2(tmp_path):
    out = _gateway("serve", "--model-repository", str(tmp_path / "absent"), "--port", "0")
    assert out.returncode == 2 and "not a directory" in out.stderr
