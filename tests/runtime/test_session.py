"""OnnxModel on real onnxruntime sessions: declared tensors, batchability, the classifier output,
load errors naming what does not fit; and the IO-binding path (used on CUDA) gives the same
outputs, in the same order, as ``session.run``, exercised on the CPU provider, where onnxruntime
supports IO binding too, so the GPU path's calls are checked without a GPU."""
from __future__ import annotations

import numpy as np
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper

from gateway.api import TensorSpec
from gateway.config.model import ModelConfig
from gateway.runtime.session import ModelLoadError, OnnxModel
from tests.conftest import save_model


@pytest.mark.parametrize("name, width", [("classifier", 16), ("regressor", 8), ("wide_mlp", 256)])
def test_io_binding_path_matches_session_run(demo_models, name, width):
    model = OnnxModel(demo_models / name / "1" / "model.onnx", name, "1", ModelConfig(), ["cpu"])
    assert model.provider == "CPUExecutionProvider" and not model._use_io_binding
    x = np.random.default_rng(3).normal(size=(5, width)).astype(np.float32)
    plain = model.run({"features": x})
    model._use_io_binding = True
    bound = model.run({"features": x})
    assert [o.shape for o in bound] == [o.shape for o in plain]
    for a, b in zip(bound, plain):
        np.testing.assert_array_equal(a, b)
    # A subset of outputs, in the order asked for.
    names = list(reversed(model.output_names))
    np.testing.assert_array_equal(model.run({"features": x}, names)[0], plain[-1])


def _two_outputs():
    """features[batch, 3] -> (scores float[batch, 3], flat float[batch]) ."""
    return helper.make_graph(
        [helper.make_node("Identity", ["features"], ["scores"]),
         helper.make_node("ReduceSum", ["features", "axes"], ["flat"], keepdims=0)], "two",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("flat", TensorProto.FLOAT, ["batch"]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(np.array([1], np.int64), "axes")])


def _load(tmp_path, graph, config: str = "") -> OnnxModel:
    path = save_model(tmp_path / "m" / "1" / "model.onnx", graph)
    return OnnxModel(path, "m", "1", ModelConfig.model_validate(yaml.safe_load(config) or {}), ["cpu"])


def test_declared_tensors_batchability_and_the_classifier_output(tmp_path):
    model = _load(tmp_path, _two_outputs(), "labels: [a, b, c]\n")
    assert model.inputs == [TensorSpec("features", np.dtype("<f4"), (-1, 3))]
    assert [(s.name, s.shape) for s in model.outputs] == [("flat", (-1,)), ("scores", (-1, 3))]
    assert model.batchable and model.max_batch_size == 32
    assert model.classifier_output == "scores"                   # the first 2-D float output
    assert model.served_by == "m@1" and model.describe() == "m@1 (features: float32[-1,3]) on CPUExecutionProvider"
    assert _load(tmp_path, _two_outputs()).classifier_output is None
    assert _load(tmp_path, _two_outputs(), "batching: {enabled: false}\n").max_batch_size == 0
    fixed = _load(tmp_path, _two_outputs(), "inputs: [{name: features, shape: [4, 3]}]\n")
    assert fixed.inputs[0].shape == (4, 3) and not fixed.batchable and fixed.max_batch_size == 0


@pytest.mark.parametrize("config, fragment", [
    ("classifier: {output: probabilities}\n", "classifier output probabilities not found among ['flat', 'scores']"),
    ("outputs: [{name: nope}]\n", "config outputs names 'nope', which the graph does not have (its outputs: flat, scores)"),
    ("inputs: [{name: pixels, shape: [-1, 3]}]\n", "config inputs names 'pixels'"),
    ("input_stats: {ranges: {pixels: [0, 1]}}\n", "config input_stats.ranges names 'pixels'"),
])
def test_config_that_does_not_fit_the_graph_fails_the_load_naming_it(tmp_path, config, fragment):
    with pytest.raises(ModelLoadError) as info:
        _load(tmp_path, _two_outputs(), config)
    assert fragment in str(info.value) and "m@1" in str(info.value)


def test_unreadable_files_and_unsupported_types_fail_the_load(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(ModelLoadError, match=str(bad)):
        OnnxModel(bad, "bad", "1", ModelConfig(), ["cpu"])
    strings = helper.make_graph(
        [helper.make_node("Identity", ["text"], ["same"])], "strings",
        [helper.make_tensor_value_info("text", TensorProto.STRING, ["batch"])],
        [helper.make_tensor_value_info("same", TensorProto.STRING, ["batch"])])
    with pytest.raises(ModelLoadError, match=r"tensor 'text' has unsupported type tensor\(string\)"):
        _load(tmp_path, strings)


@pytest.mark.parametrize("arena", [False, True])
def test_the_cpu_arena_is_off_unless_the_model_asks_for_it(demo_models, arena):
    config = ModelConfig(cpu_memory_arena=True) if arena else ModelConfig()
    model = OnnxModel(demo_models / "regressor" / "1" / "model.onnx", "regressor", "1", config)
    assert model.session.get_session_options().enable_cpu_mem_arena is arena
    x = np.ones((3, 8), np.float32)
    assert model.run({"features": x})[0].shape == (3, 1)
