"""The CLI as a user runs it, against a real `gateway serve` process."""
from __future__ import annotations

import asyncio
import errno
import http.server
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

import gateway.kernels
from gateway._version import __version__
from gateway.adapters.grpc_v1.server import ListenError, check_listenable
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
    (tmp_path / "cut.json").write_text('{"features": [[1, 2]')  # the file is blamed, by name (exit 2)
    cut = _gateway("predict", "--model", "classifier", "--address", address, "--input", str(tmp_path / "cut.json"))
    assert cut.returncode == 2
    assert cut.stderr == f"gateway predict: {tmp_path / 'cut.json'}: not valid JSON: Expecting ',' delimiter at " \
                         f"line 1 column 21\n"


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


def _listening_socket() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


def test_a_taken_port_is_one_line_naming_the_address_and_exit_2(demo_models):
    with _listening_socket() as taken:
        port = taken.getsockname()[1]
        out = _gateway("serve", "--model-repository", str(demo_models), "--port", str(port), "--admin-port", "0")
    assert out.returncode == 2
    assert out.stderr.splitlines() == [f"gateway: cannot listen on 127.0.0.1:{port}: address already in use"]


def test_listen_errors_say_why_before_anything_starts():
    with _listening_socket() as taken:
        with pytest.raises(ListenError, match=r"address already in use") as err:
            check_listenable("127.0.0.1", taken.getsockname()[1])
        assert err.value.errno == errno.EADDRINUSE
    with pytest.raises(ListenError, match=r"cannot listen on no-such-host\.invalid:8001: cannot resolve"):
        check_listenable("no-such-host.invalid", 8001)
    with pytest.raises(ListenError, match=r"cannot listen on 192\.0\.2\.1:8001: cannot assign requested address"):
        check_listenable("192.0.2.1", 8001)               # TEST-NET-1: never an address of this host
    check_listenable("127.0.0.1", 0)                       # port 0 always binds


def test_flag_and_variable_errors_are_named_as_given():
    out = _gateway("serve", "--port", "70000")
    assert out.returncode == 2 and "--port: Input should be less than or equal to 65535 (got 70000)" in out.stderr
    assert "environment" not in out.stderr
    out = subprocess.run([sys.executable, "-m", "gateway", "serve"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "GATEWAY_ADMINPORT": "1"})
    assert out.returncode == 2
    assert "GATEWAY_ADMINPORT: unknown setting (did you mean GATEWAY_ADMIN_PORT?)" in out.stderr


def test_client_commands_read_the_address_from_the_environment(served):
    address, _, _ = served
    env = {**os.environ, "GATEWAY_ADDRESS": address}
    listing = subprocess.run([sys.executable, "-m", "gateway", "models"], capture_output=True, text=True,
                             timeout=60, env=env)
    assert listing.returncode == 0 and listing.stdout.splitlines()[1].startswith("classifier ")
    with _listening_socket() as dead:                     # the flag wins over the variable
        env["GATEWAY_ADDRESS"] = f"127.0.0.1:{dead.getsockname()[1]}"
        predicted = subprocess.run([sys.executable, "-m", "gateway", "predict", "--model", "regressor",
                                    "--address", address], capture_output=True, text=True, timeout=60, env=env)
    assert predicted.returncode == 0 and json.loads(predicted.stdout)["served_by"] == "regressor@1"


def test_a_server_that_is_not_this_gateway_is_said_so(tmp_path):
    """A gRPC server without gateway.v1, an HTTP/1 server, and nothing listening: each one line
    that says what is there."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start_other():
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(health_aio.HealthServicer(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    other, port = asyncio.run_coroutine_threadsafe(start_other(), loop).result(30)
    web = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    try:
        out = _gateway("models", "--address", f"127.0.0.1:{port}")
        (line,) = out.stderr.splitlines()
        assert out.returncode == 1 and line.startswith(
            f"gateway models: the server at 127.0.0.1:{port} does not implement gateway.v1.Gateway: "
            f"it is not this gateway (UNIMPLEMENTED")
        http_address = f"127.0.0.1:{web.server_address[1]}"
        out = _gateway("stats", "--address", http_address)
        assert out.returncode == 1
        assert out.stderr.startswith(f"gateway stats: the server at {http_address} does not speak gRPC")
    finally:
        web.shutdown()
        web.server_close()
        asyncio.run_coroutine_threadsafe(other.stop(0), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
    with _listening_socket() as s:
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    out = _gateway("predict", "--model", "classifier", "--address", dead)
    assert out.returncode == 1
    assert out.stderr.startswith(f"gateway predict: cannot reach a gateway at {dead} (pass --address or set "
                                 f"GATEWAY_ADDRESS)")


def test_version_and_python_m_from_a_source_tree_without_kernels(tmp_path, demo_models):
    """From the root of a checkout whose kernels are not built in place (what a plain
    ``pip install .`` leaves), ``python -m gateway`` runs the installed package, saying so; an
    import of the kernels from that tree says how to fix it instead of a bare ModuleNotFoundError."""
    assert _gateway("--version").stdout == f"gateway {__version__}\n"
    source = pathlib.Path(__file__).resolve().parents[2] / "gateway"
    shutil.copytree(source, tmp_path / "gateway", ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__"))
    installed = pathlib.Path(gateway.kernels.__file__).resolve().parent

    def run(*args, **kw):
        return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=60, cwd=tmp_path, **kw)

    broken = run("-c", "import gateway.kernels")
    assert broken.returncode == 1
    missing = f"the compiled kernels are missing from {tmp_path.resolve() / 'gateway' / '_native'}"
    assert missing in broken.stderr and "build in place: python setup.py build_ext --inplace" in broken.stderr
    # the tree's own CLI (no __main__ to re-run the installed package): serve says it in one line
    direct = run("-c", "import sys; from gateway.cli import main; sys.exit(main(['serve', '--port', '0']))")
    (line,) = direct.stderr.splitlines()
    assert direct.returncode == 2 and line.startswith(f"gateway: {missing}")
    with _listening_socket() as taken:                    # serve gets as far as binding: the kernels loaded
        port = taken.getsockname()[1]
        out = run("-m", "gateway", "serve", "--model-repository", str(demo_models), "--port", str(port),
                  "--admin-port", "0")
    notice, error = out.stderr.splitlines()
    assert notice.startswith(f"gateway: {tmp_path.resolve() / 'gateway'} has no built kernels") and \
        f"running the installed package at {installed} instead" in notice
    assert out.returncode == 2 and error == f"gateway: cannot listen on 127.0.0.1:{port}: address already in use"
