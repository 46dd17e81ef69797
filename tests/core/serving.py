"""Real model versions in-process, without gRPC: ONNX graphs made with ``onnx.helper``, real
onnxruntime sessions (:class:`gateway.runtime.session.OnnxModel`), assembled into versions by the
real :class:`~gateway.core.assembly.Assembler` (batcher included) on the running event loop, put
into a :class:`~gateway.core.registry.ModelRegistry` and served by a
:class:`~gateway.core.dataplane.DataPlane` built by hand. Use inside ``asyncio.run``."""
from __future__ import annotations

import pathlib
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper, numpy_helper

from gateway.api import InferRequest
from gateway.config.model import ModelConfig
from gateway.core.assembly import Assembler, AssemblyOptions
from gateway.core.dataplane import DataPlane
from gateway.core.observers import Decisions
from gateway.core.registry import ModelEntry, ModelRegistry, ModelVersion
from gateway.runtime.session import OnnxModel
from tests.conftest import save_model

LABELS = "labels: [a, b, c]\n"


def linear(weights: np.ndarray, width: int | str | None = None, *, inp: str = "features",
           out: str = "probabilities") -> onnx.GraphProto:
    """``out[batch, k] = inp[batch, width] @ weights``. With a symbolic ``width`` a request of
    another width passes validation and fails inside onnxruntime (a real execution error)."""
    w = numpy_helper.from_array(np.asarray(weights, np.float32), "W")
    return helper.make_graph(
        [helper.make_node("MatMul", [inp, "W"], [out])], "linear",
        [helper.make_tensor_value_info(inp, TensorProto.FLOAT, ["batch", width or w.dims[0]])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["batch", w.dims[1]])], [w])


def echo(width: int | str | None = None, **names) -> onnx.GraphProto:
    """Three features in, the same three values out (identity weights)."""
    return linear(np.eye(3), width, **names)


def unbatched() -> onnx.GraphProto:
    """features[3] -> probabilities[3]: no batch dimension, so requests run one at a time."""
    return helper.make_graph(
        [helper.make_node("Identity", ["features"], ["probabilities"])], "unbatched",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [3])])


def model_config(text: str = "") -> ModelConfig:
    return ModelConfig.model_validate(yaml.safe_load(text) or {})


def onnx_model(root: pathlib.Path, name: str, graph: onnx.GraphProto, config: ModelConfig,
               version: str = "1") -> OnnxModel:
    path = save_model(root / name / version / "model.onnx", graph)
    return OnnxModel(path, name, version, config, ["cpu"])


def rows(*values) -> np.ndarray:
    return np.array(values, np.float32).reshape(len(values), -1)


def request(model: str = "echo", x: np.ndarray | None = None, **fields) -> InferRequest:
    x = rows([0.1, 0.7, 0.2]) if x is None else x
    fields.setdefault("t_received_ns", time.monotonic_ns())
    fields.setdefault("request_id", "r")
    return InferRequest(model=model, inputs={"features": x}, **fields)


class Answers:
    """A request observer that keeps what it is told."""

    def __init__(self) -> None:
        self.seen: list[tuple] = []

    def on_answer(self, request, attempt, status, response, fallback_code, t_responded_ns) -> None:
        self.seen.append((request, attempt, status, response, fallback_code, t_responded_ns))


class Serving:
    """Registry, assembler, decision list and data plane of one test (``close`` when done)."""

    def __init__(self, root: pathlib.Path, *, allow_fault_injection: bool = False, inline_below_us: int = 0,
                 observers: tuple = (), telemetry=None, statistics=None) -> None:
        self.root = root
        self.executor = ThreadPoolExecutor(2, thread_name_prefix="test-onnx")
        self.decisions: list[tuple[str | None, str, dict]] = []
        decide = Decisions((self._decided,))
        self.assembler = Assembler(self.executor, AssemblyOptions(
            inline_execution_below_us=inline_below_us, allow_fault_injection=allow_fault_injection),
            observers=telemetry, decisions=decide)
        self.registry = ModelRegistry()
        self.answers = Answers()
        self.dataplane = DataPlane(self.registry, observers=(self.answers, *observers), decisions=decide,
                                   statistics=statistics)
        self.pipeline = self.dataplane._pipeline

    def _decided(self, request, event: str, attributes: dict) -> None:
        self.decisions.append((request.request_id if request is not None else None, event, dict(attributes)))

    def events(self) -> list[str]:
        return [event for _, event, _ in self.decisions]

    def add(self, name: str, graph: onnx.GraphProto, config: str = "", version: str = "1") -> ModelVersion:
        """Load and assemble ``name@version`` (on the running loop) and put it into the registry."""
        cfg = model_config(config)
        mv = self.assembler.build(onnx_model(self.root, name, graph, cfg, version), cfg)
        entry = self.registry.get(name)
        versions = dict(entry.versions) if entry is not None else {}
        versions[version] = mv
        self.registry.put(ModelEntry(name, versions, dict(entry.errors) if entry is not None else {}))
        return mv

    async def close(self) -> None:
        for entry in self.registry.entries():
            for mv in entry.versions.values():
                await mv.batcher.close()
        self.executor.shutdown(wait=True)
