"""The bench's model repository, generated with ``onnx.helper`` (seeded, so every run and every
server loads the same weights).

- ``mlp``: 64 float features -> 256 (ReLU) -> 10-way softmax, the small model the peers are
  compared on (batch 1, where the servers' own per-request work dominates);
- ``mlp_faults``: the same model with injected faults (errors, jittered latency) and a static
  fallback, for the fault scenario (the gateway must run with ``GATEWAY_ALLOW_FAULT_INJECTION``);
- ``wide_mlp``: the demo's compute-heavy model (256 -> 3 x 1792 -> 10, 6.9 M weights), for the
  gateway-against-raw-onnxruntime ceiling.
"""
from __future__ import annotations

import pathlib

import onnx

from gateway.demo.models import DEMO_MODELS, _mlp

MLP_CONFIG = ("batching:\n  max_batch_size: 64\n  max_queue_delay_us: 200\n"
              "classifier:\n  output: probabilities\n")
FAULTS_CONFIG = MLP_CONFIG + (
    "faults: {error_rate: 0.05, latency_ms: 0.2, latency_jitter_ms: 2.0, seed: 7}\n"
    "policy:\n  fallback: {chain: [{static: {probabilities: [0.1, 0.1, 0.1, 0.1, 0.1, "
    "0.1, 0.1, 0.1, 0.1, 0.1]}}]}\n")
BENCH_MODELS = ("mlp", "mlp_faults", "wide_mlp")
VERSION = "1"


def build_mlp() -> onnx.ModelProto:
    return _mlp("mlp", [64, 256, 10], softmax=True, output_name="probabilities", seed=11)


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
        else:
            model, config = build_mlp(), FAULTS_CONFIG if name == "mlp_faults" else MLP_CONFIG
        if instance_count > 1:
            config += f"instance_count: {instance_count}\n"
        onnx.save(model, str(root / name / "1" / "model.onnx"))
        (root / name / "config.yaml").write_text(config)
    marker.write_text("")
    return root
