"""SIGTERM on a real `gateway serve` process: NOT_SERVING, in-flight requests finish, exit 0."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from onnx import TensorProto, helper

from gateway._proto import gateway_pb2 as pb
from gateway._proto import gateway_pb2_grpc as pb_grpc
from gateway.client import from_numpy
from tests.conftest import free_port, save_model

ROWS = 1024


def _slow_graph(features: int, chained: int):
    """x[rows, features] @ x^T, then ``chained`` more [rows, rows] products (tanh between, to stay
    finite), summed per row: 2 x 1024^2 x ``features`` + ~2.1 G x ``chained`` FLOP at 1024 rows."""
    nodes = [helper.make_node("Transpose", ["features"], ["xt"], perm=[1, 0]),
             helper.make_node("MatMul", ["features", "xt"], ["gram"])]
    last = "gram"
    for i in range(chained):
        nodes += [helper.make_node("Tanh", [last], [f"t{i}"]),
                  helper.make_node("MatMul", [f"t{i}", f"t{i}"], [f"g{i}"])]
        last = f"g{i}"
    nodes.append(helper.make_node("ReduceSum", [last, "axes"], ["total"], keepdims=1))
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    return helper.make_graph(nodes, "slow",
                             [helper.make_tensor_value_info("features", TensorProto.FLOAT, [ROWS, features])],
                             [helper.make_tensor_value_info("total", TensorProto.FLOAT, [ROWS, 1])], [axes])


#: The drain tests' model: ~17 GFLOP of compute a call on a 256 KiB request, so calls that queue
#: are all received (counted in flight) long before the first is answered
DRAIN_FEATURES, DRAIN_CHAINED = 64, 8


def _wait_serving(channel, proc, timeout_s=60):
    stub = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        try:
            if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
                return stub
        except grpc.RpcError:
            pass
        time.sleep(0.1)
    raise AssertionError("gateway did not become SERVING")


def _in_flight(admin_port: int) -> int:
    """The server's calls in flight, from its /metrics (0 if the scrape fails)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=10) as r:
            text = r.read().decode()
    except OSError:
        return 0
    match = re.search(r"^gateway_requests_in_flight(?:\{[^}]*\})? (\S+)$", text, flags=re.M)
    return int(float(match.group(1))) if match else 0


def test_sigterm_drains_in_flight_requests_and_exits_zero(tmp_path):
    save_model(tmp_path / "models" / "slow" / "1" / "model.onnx", _slow_graph(DRAIN_FEATURES, DRAIN_CHAINED))
    # Monitoring off: this is about the drain. (Input statistics are the debug build's slowest
    # part: with line tracing, two threads in the kernels at once hand the GIL back and forth at
    # every line; with 2,048 features, the warm-up freeze on the freezer thread beside the
    # execution thread's statistics took each call from under 1.5 s to over 6.)
    (tmp_path / "models" / "slow" / "config.yaml").write_text("instance_count: 1\nmonitoring: {enabled: false}\n")
    port, admin_port = free_port(), free_port()
    env = {**os.environ, "GATEWAY_TELEMETRY__ENABLED": os.environ.get("GATEWAY_TELEMETRY__ENABLED", "true"),
           "GATEWAY_GRACE_PERIOD_S": "30"}
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--model-repository",
                             str(tmp_path / "models"), "--port", str(port), "--admin-port", str(admin_port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        health = _wait_serving(channel, proc)
        stub = pb_grpc.GatewayStub(channel)
        x = np.random.default_rng(0).standard_normal((ROWS, DRAIN_FEATURES)).astype(np.float32)
        request = pb.PredictRequest(model="slow", inputs=[from_numpy("features", x)])
        t0 = time.monotonic()
        stub.Predict(request, timeout=60)
        one_run_s = time.monotonic() - t0
        results: list = []

        def call():
            try:
                results.append(stub.Predict(request, timeout=60).served_by)
            except grpc.RpcError as exc:
                results.append(exc.code())

        # Three requests queue behind one instance: the drain must wait for all of them.
        callers = [threading.Thread(target=call) for _ in range(3)]
        for c in callers:
            c.start()
        # until the server holds all three (a call gRPC has not yet handed to the server when the
        # drain begins is answered CANCELLED: a terminal answer, not the drain under test)
        deadline, held = time.monotonic() + 30, 0
        while time.monotonic() < deadline and held < 3 and any(c.is_alive() for c in callers):
            time.sleep(0.02)
            held = _in_flight(admin_port)
        assert held == 3, f"{held} of 3 calls in flight at once (one call took {one_run_s:.2f} s)"
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        status = None
        try:
            status = health.Check(health_pb2.HealthCheckRequest(), timeout=2).status
        except grpc.RpcError:
            pass  # already refusing connections: also correct
        assert status in (None, health_pb2.HealthCheckResponse.NOT_SERVING)
        with_new = grpc.insecure_channel(f"127.0.0.1:{port}")
        try:
            pb_grpc.GatewayStub(with_new).Predict(request, timeout=5)
            refused = False
        except grpc.RpcError as exc:
            refused = exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
        with_new.close()
        assert refused, "a new request was accepted while draining"
        for c in callers:
            c.join(60)
        assert results == ["slow@1"] * 3
        assert proc.wait(30) == 0
        channel.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
