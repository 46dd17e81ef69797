"""OnnxModel on real onnxruntime sessions: the IO-binding path (used on CUDA) gives the same
outputs, in the same order, as ``session.run``; exercised here on the CPU provider, where
onnxruntime supports IO binding too, so the GPU path's calls are checked without a GPU."""
from __future__ import annotations

import numpy as np
import pytest

from gateway.config.model import ModelConfig
from gateway.runtime.session import OnnxModel


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
