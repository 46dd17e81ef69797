"""The bench's model repository, generated with ``onnx.helper`` (seeded, so every run and every
server loads the same weights).

- ``mlp``: 64 float features -> 256 (ReLU) -> 10-way softmax, the small model the peers are
  compared on (batch 1, where the servers' own per-request work dominates);
- ``mlp_faults``: the same model with injected faults (errors, jittered latency) and a static
  fallback, for the fault scenario (the gateway must run with ``GATEWAY_ALLOW_FAULT_INJECTION``);
- ``heavy_cnn``: compute-bound: a 1 x 64 x 64 input through three 3 x 3 convolutions (32, 64 and
  64 channels, the last with stride 2: ~230 MFLOP a row, 56 k weights), global average pooling
  and a 10-way softmax: a row costs about the same in any batch (~2-4 ms on one core here), so
  it is the ceiling comparison's model; ``heavy_cnn_arena``: the same with onnxruntime's CPU
  arena on (``cpu_memory_arena: true``; the gateway's default is off);
- ``wide_mlp``: the demo's large MLP (256 -> 3 x 1792 -> 10, 6.9 M weights), bound by streaming
  its weights at small batches (the batching benchmark's model).
"""
from __future__ import annotations

import pathlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from gateway.demo.models import DEMO_MODELS, _mlp

MLP_CONFIG = ("batching:\n  max_batch_size: 64\n  max_queue_delay_us: 200\n"
              "classifier:\n  output: probabilities\n")
FAULTS_CONFIG = MLP_CONFIG + (
    "faults: {error_rate: 0.05, latency_ms: 0.2, latency_jitter_ms: 2.0, seed: 7}\n"
    "policy:\n  fallback: {chain: [{static: {probabilities: [0.1, 0.1, 0.1, 0.1, 0.1, "
    "0.1, 0.1, 0.1, 0.1, 0.1]}}]}\n")
HEAVY_CONFIG = ("batching:\n  max_batch_size: 32\n  max_queue_delay_us: 1000\n"
                "classifier:\n  output: probabilities\n")
BENCH_MODELS = ("mlp", "mlp_faults", "heavy_cnn", "heavy_cnn_arena", "wide_mlp")
VERSION = "4"


def build_mlp() -> onnx.ModelProto:
    return _mlp("mlp", [64, 256, 10], softmax=True, output_name="probabilities", seed=11)


def build_heavy_cnn() -> onnx.ModelProto:
    rng = np.random.default_rng(12)

    def weight(name: str, *shape: int) -> onnx.TensorProto:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        return numpy_helper.from_array((rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32), name)

    inits = [weight("C1", 32, 1, 3, 3), numpy_helper.from_array(np.zeros(32, np.float32), "c1"),
             weight("C2", 64, 32, 3, 3), numpy_helper.from_array(np.zeros(64, np.float32), "c2"),
             weight("C3", 64, 64, 3, 3), numpy_helper.from_array(np.zeros(64, np.float32), "c3"),
             weight("W", 64, 10), numpy_helper.from_array(np.zeros(10, np.float32), "b")]
    nodes = [helper.make_node("Conv", ["image", "C1", "c1"], ["x1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["x1"], ["r1"]),
             helper.make_node("Conv", ["r1", "C2", "c2"], ["x2"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["x2"], ["r2"]),
             helper.make_node("Conv", ["r2", "C3", "c3"], ["x3"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["x3"], ["r3"]),
             helper.make_node("GlobalAveragePool", ["r3"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["flat"]),
             helper.make_node("Gemm", ["flat", "W", "b"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)]
    graph = helper.make_graph(
        nodes, "heavy_cnn", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 64, 64])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="gateway-bench")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_repository(root: pathlib.Path, models: tuple[str, ...] = BENCH_MODELS,
                     instance_count: int = 1) -> pathlib.Path:
    """``root/<model>/1/model.onnx`` and ``config.yaml`` for each model; kept when already there.
    ``instance_count`` > 1 lets that many executions of each model run at once."""
    marker = root / f".bench-v{VERSION}-{'-'.join(models)}-i{instance_count}"
    if marker.exists():
        return root
    for name in models:
        (root / name / "1").mkdir(parents=True, exist_ok=True)
        if name == "wide_mlp":
            model, config = DEMO_MODELS["wide_mlp"]["build"](), DEMO_MODELS["wide_mlp"]["config"]
        elif name in ("heavy_cnn", "heavy_cnn_arena"):
            model = build_heavy_cnn()
            config = HEAVY_CONFIG + ("cpu_memory_arena: true\n" if name == "heavy_cnn_arena" else "")
        else:
            model, config = build_mlp(), FAULTS_CONFIG if name == "mlp_faults" else MLP_CONFIG
        if instance_count > 1:
            config += f"instance_count: {instance_count}\n"
        onnx.save(model, str(root / name / "1" / "model.onnx"))
        (root / name / "config.yaml").write_text(config)
    marker.write_text("")
    return root
