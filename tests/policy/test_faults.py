"""Fault injection: seeded error and NaN rates, added latency, and the wrapped model (a real
onnxruntime session) that everything but ``run`` passes through to."""
from __future__ import annotations

import time

import numpy as np
import pytest
from onnx import TensorProto, helper

from gateway.policy.config import FaultInjectionConfig
from gateway.policy.faults import FaultInjector, FaultyModel, InjectedFault, announce
from tests.core.serving import echo, model_config, onnx_model, rows


def _decisions(injector: FaultInjector, n: int) -> list[tuple[bool, bool]]:
    return [injector.before() for _ in range(n)]


def test_no_config_means_no_faults():
    injector = FaultInjector(None)
    assert _decisions(injector, 20) == [(False, False)] * 20
    assert (injector.executions, injector.injected_errors, injector.injected_nans) == (20, 0, 0)


def test_rates_are_seeded_and_counted_and_an_error_is_never_also_nan():
    config = FaultInjectionConfig(error_rate=0.3, nan_rate=0.5, seed=7)
    a, b = FaultInjector(config), FaultInjector(config)
    first = _decisions(a, 400)
    assert first == _decisions(b, 400)                       # same seed, same faults
    errors = sum(fail for fail, _ in first)
    nans = sum(nan for _, nan in first)
    assert not any(fail and nan for fail, nan in first)
    assert (a.injected_errors, a.injected_nans, a.executions) == (errors, nans, 400)
    assert 80 < errors < 160 and 100 < nans < 180            # 0.3 and 0.5 of the remaining 0.7
    a.update(config)                                         # a reloaded config starts the sequence again
    assert _decisions(a, 400) == first


def test_latency_is_slept_before_the_execution():
    injector = FaultInjector(FaultInjectionConfig(latency_ms=30))
    began = time.monotonic()
    injector.before()
    assert time.monotonic() - began >= 0.03


def _two_outputs():
    """features -> (probabilities float32, count int64) so NaN injection has an integer output to spare."""
    return helper.make_graph(
        [helper.make_node("Identity", ["features"], ["probabilities"]),
         helper.make_node("Shape", ["features"], ["count"])], "two",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3]),
         helper.make_tensor_value_info("count", TensorProto.INT64, [2])])


def test_the_wrapped_model_fails_or_answers_nan_and_passes_everything_else_through(tmp_path):
    model = onnx_model(tmp_path, "m", _two_outputs(), model_config())
    nan = FaultyModel(model, FaultInjector(FaultInjectionConfig(nan_rate=1.0)))
    assert (nan.served_by, nan.output_names, nan.batchable) == ("m@1", ["probabilities", "count"], False)
    probabilities, count = nan.run({"features": rows([1, 2, 3])})
    assert np.isnan(probabilities).all() and count.tolist() == [1, 3]
    failing = FaultyModel(onnx_model(tmp_path, "e", echo(), model_config()),
                          FaultInjector(FaultInjectionConfig(error_rate=1.0)))
    with pytest.raises(InjectedFault, match="faults.error_rate"):
        failing.run({"features": rows([1, 2, 3])})
    assert failing.faults.injected_errors == 1
    clean = FaultyModel(model, FaultInjector(None))
    np.testing.assert_array_equal(clean.run({"features": rows([1, 2, 3])})[0], rows([1, 2, 3]))


def test_active_faults_are_announced_as_a_warning(caplog):
    announce("m@1", FaultInjectionConfig(error_rate=0.5))
    announce("m@2", None)
    (record,) = [r for r in caplog.records if r.name == "gateway.policy"]
    assert record.levelname == "WARNING" and "FAULT INJECTION ACTIVE for model m@1: error rate 0.5" in record.getMessage()
