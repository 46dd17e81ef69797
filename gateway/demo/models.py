"""Builds the demo models with ``onnx.helper`` from seeded random weights.

- ``classifier``: tabular classifier, 16 float features -> softmax over 3 labelled classes.
- ``regressor``: 8 float features -> one value.
- ``wide_mlp``: 256 -> 3 x 1792 (ReLU) -> 10-way softmax, 6.9 M weights (28 MB): ~0.9 ms per
  batch-1 run on one CPU thread (measured on the 2-core bench machine), bound by streaming the
  weights from memory, so a batch of 32 costs only ~6x one row: batching is what makes it cheap.
"""
from __future__ import annotations

import logging
import os
import pathlib
import shutil
import tempfile
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

log = logging.getLogger("gateway.demo")

DEMO_VERSION = "2"  # bump when the generated models change


def _mlp(name: str, layer_sizes: list[int], *, softmax: bool, output_name: str, seed: int) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    current = "features"
    for i, (fan_in, fan_out) in enumerate(zip(layer_sizes[:-1], layer_sizes[1:])):
        w = (rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        b = (rng.standard_normal(fan_out) * 0.1).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"W{i}"), numpy_helper.from_array(b, f"B{i}")]
        last = i == len(layer_sizes) - 2
        out = (("logits" if softmax else output_name) if last else f"h{i}")
        nodes.append(helper.make_node("Gemm", [current, f"W{i}", f"B{i}"], [out if last else f"g{i}"]))
        if not last:
            nodes.append(helper.make_node("Relu", [f"g{i}"], [out]))
        current = out
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], [output_name], axis=1))
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", layer_sizes[0]])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", layer_sizes[-1]])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="gateway-demo")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


DEMO_MODELS: dict[str, dict[str, Any]] = {
    "classifier": dict(
        build=lambda: _mlp("classifier", [16, 32, 3], softmax=True, output_name="probabilities", seed=1),
        config=("batching:\n  max_batch_size: 64\n  max_queue_delay_us: 200\n"
                "labels: [approve, review, decline]\nclassifier:\n  output: probabilities\n")),
    "regressor": dict(
        build=lambda: _mlp("regressor", [8, 16, 1], softmax=False, output_name="prediction", seed=2),
        config="batching:\n  max_batch_size: 64\n  max_queue_delay_us: 200\n"),
    "wide_mlp": dict(
        build=lambda: _mlp("wide_mlp", [256, 1792, 1792, 1792, 10], softmax=True,
                           output_name="probabilities", seed=3),
        config=("batching:\n  max_batch_size: 64\n  max_queue_delay_us: 2000\n"
                "  preferred_batch_sizes: [32, 64]\nclassifier:\n  output: probabilities\n")),
}


def write_demo_repository(root: pathlib.Path, models: list[str] | None = None) -> pathlib.Path:
    """Write the demo models as ``root/<model>/1/model.onnx`` plus each ``config.yaml``."""
    root.mkdir(parents=True, exist_ok=True)
    for name in models or list(DEMO_MODELS):
        spec = DEMO_MODELS[name]
        (root / name / "1").mkdir(parents=True, exist_ok=True)
        onnx.save(spec["build"](), str(root / name / "1" / "model.onnx"))
        (root / name / "config.yaml").write_text(spec["config"])
    return root


def _cache_root() -> pathlib.Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(pathlib.Path.home() / ".cache")
    return pathlib.Path(base) / "onnx-inference-gateway"


def demo_repository() -> pathlib.Path:
    """The bundled demo repository, generated once into the user cache directory."""
    target = _cache_root() / f"demo-repository-v{DEMO_VERSION}"
    if (target / ".complete").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix="demo-", dir=target.parent))
    log.info("generating the demo model repository in %s", target)
    write_demo_repository(staging)
    (staging / ".complete").write_text("")
    try:
        staging.rename(target)
    except OSError:  # another process won the race
        shutil.rmtree(staging, ignore_errors=True)
    return target
