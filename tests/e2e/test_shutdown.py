"""SIGTERM on a real `gateway serve` process: NOT_SERVING, in-flight requests finish, exit 0."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from onnx import TensorProto, helper

from gateway._proto import gateway_pb2 as pb
from gateway._proto import gateway_pb2_grpc as pb_grpc
from gateway.client import from_numpy
from tests.conftest import free_port, save_model

ROWS = 1024


def _slow_graph(chained: int = 0):
    """x[rows, 2048] @ x^T summed per row: ~4 GFLOP at 1024 rows, a few hundred ms on one thread.
    ``chained`` more [rows, rows] products (tanh between, to stay finite) add ~2 GFLOP each."""
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
                             [helper.make_tensor_value_info("features", TensorProto.FLOAT, [ROWS, 2048])],
                             [helper.make_tensor_value_info("total", TensorProto.FLOAT, [ROWS, 1])], [axes])


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


def test_sigterm_drains_in_flight_requests_and_exits_zero(tmp_path):
    save_model(tmp_path / "models" / "slow" / "1" / "model.onnx", _slow_graph())
    # Monitoring off: this is about the drain. (Its input statistics are the debug build's slowest
    # part: with line tracing, two threads in the kernels at once hand the GIL back and forth at
    # every line, and the warm-up freeze of 2,048 features on the freezer thread beside the
    # execution thread's statistics took each from under 1.5 s to over 6.)
    (tmp_path / "models" / "slow" / "config.yaml").write_text("instance_count: 1\nmonitoring: {enabled: false}\n")
    port = free_port()
    env = {**os.environ, "GATEWAY_TELEMETRY__ENABLED": os.environ.get("GATEWAY_TELEMETRY__ENABLED", "true")}
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--model-repository",
                             str(tmp_path / "models"), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        health = _wait_serving(channel, proc)
        stub = pb_grpc.GatewayStub(channel)
        x = np.random.default_rng(0).standard_normal((ROWS, 2048)).astype(np.float32)
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
        time.sleep(min(0.5, one_run_s / 2))
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
