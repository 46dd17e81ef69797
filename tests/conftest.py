"""Shared fixtures: demo models on disk and a real gateway serving them on a loopback port."""
from __future__ import annotations

# First: importing gateway turns gRPC core's optimization_04 off, which works only before grpc is
# imported (gateway/_grpc_core.py); the in-process servers below need it as `gateway serve` has it.
import gateway  # noqa: F401  isort: skip

import asyncio
import pathlib
import shutil
import socket
import threading

import grpc
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from gateway._proto import gateway_pb2 as pb
from gateway._proto import gateway_pb2_grpc as pb_grpc
from gateway.config.settings import load_settings
from gateway.demo import write_demo_repository
from gateway.app import GatewayServer
from gateway.client import from_numpy, to_numpy_outputs


@pytest.fixture(scope="session")
def demo_models(tmp_path_factory) -> pathlib.Path:
    """The demo repository, generated once per test session (read-only: copy before changing)."""
    return write_demo_repository(tmp_path_factory.mktemp("demo"))


@pytest.fixture
def repo(tmp_path, demo_models) -> pathlib.Path:
    """A private, writable copy of the demo repository."""
    target = tmp_path / "models"
    shutil.copytree(demo_models, target)
    return target


class RunningGateway:
    """A GatewayServer on its own event loop thread, so tests can use plain blocking clients."""

    def __init__(self, *, metric_exporter=None, span_exporter=None, **settings):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="gateway-loop", daemon=True)
        self.thread.start()
        settings.setdefault("port", 0)
        settings.setdefault("reload_interval_s", 0)
        settings.setdefault("admin_port", 0)  # tests that need it pass a free port
        self.settings = load_settings(**settings)

        async def make() -> GatewayServer:
            return GatewayServer(self.settings, metric_exporter=metric_exporter, span_exporter=span_exporter)

        self.server = self.call(make())
        self.port = self.call(self.server.start())
        self.address = f"127.0.0.1:{self.port}"
        self.channel = grpc.insecure_channel(self.address)
        self.stub = pb_grpc.GatewayStub(self.channel)

    def call(self, coro, timeout_s: float = 60.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def reload(self) -> None:
        self.call(self.server.reload())

    def predict(self, model: str, inputs: dict[str, np.ndarray], **fields) -> pb.PredictResponse:
        timeout = fields.pop("timeout", 30)
        req = pb.PredictRequest(model=model, inputs=[from_numpy(k, v) for k, v in inputs.items()], **fields)
        return self.stub.Predict(req, timeout=timeout)

    def close(self, grace_s: float = 5.0) -> None:
        if self.loop.is_closed():   # closed by the test already (a restart)
            return
        self.channel.close()
        try:
            self.call(self.server.stop(grace_s))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


@pytest.fixture
def make_gateway():
    started: list[RunningGateway] = []

    def make(**settings) -> RunningGateway:
        """Settings as keywords; ``metric_exporter`` / ``span_exporter`` replace the OTLP ones."""
        gw = RunningGateway(**settings)
        started.append(gw)
        return gw

    yield make
    for gw in started:
        gw.close()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    """One gateway on the demo models shared by a test module (don't change its repository)."""
    root = write_demo_repository(tmp_path_factory.mktemp("shared-demo"))
    gw = RunningGateway(model_repository=root)
    yield gw
    gw.close()


def outputs(response: pb.PredictResponse) -> dict[str, np.ndarray]:
    return to_numpy_outputs(response)


def parse_reason(reason: str) -> str:
    """How the gateway names why bytes did not parse: protobuf's reason where it gives one
    (protobuf 7), else its own words (protobuf 6, which tritonclient[grpc] needs, gives none)."""
    import google.protobuf

    from gateway.adapters.grpc_v1.converters import UNKNOWN_PARSE_ERROR

    return reason if int(google.protobuf.__version__.split(".")[0]) >= 7 else UNKNOWN_PARSE_ERROR


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def save_model(path: pathlib.Path, graph: onnx.GraphProto) -> pathlib.Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def matmul_graph(rows: str | int = "batch", features: int | str = 16, classes: int = 3) -> onnx.GraphProto:
    """features[rows, features] @ W[16, classes]: with a dynamic feature dim, a wrong width
    passes validation and fails inside onnxruntime (used for INTERNAL errors)."""
    w = numpy_helper.from_array(np.ones((16, classes), np.float32), "W")
    return helper.make_graph(
        [helper.make_node("MatMul", ["features", "W"], ["scores"])], "matmul",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [rows, features])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [rows, classes])], [w])
