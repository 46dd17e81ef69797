"""Where the batcher runs a model (event loop or worker thread), observed through a real gateway."""
from __future__ import annotations

import concurrent.futures

import numpy as np
import onnxruntime as ort


def _predict_many(gw, n=40):
    x = np.random.default_rng(1).standard_normal((n, 1, 8)).astype(np.float32)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        return x, list(pool.map(lambda row: gw.predict("regressor", {"features": row}), x))


def test_fast_models_run_inline_and_answer_the_same(make_gateway, demo_models):
    gw = make_gateway(model_repository=demo_models, inline_execution_below_us=10_000)
    x, responses = _predict_many(gw)
    batcher = gw.server.registry.resolve("regressor").batcher
    assert batcher.inline_executions > 0
    session = ort.InferenceSession(str(demo_models / "regressor" / "1" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    for row, response in zip(x, responses):
        got = np.frombuffer(response.outputs[0].data, np.float32)
        np.testing.assert_allclose(got, session.run(None, {"features": row})[0].ravel(), rtol=1e-5)


def test_a_huge_request_to_a_fast_model_runs_off_the_loop(make_gateway, demo_models):
    gw = make_gateway(model_repository=demo_models, inline_execution_below_us=10_000)
    _predict_many(gw)
    batcher = gw.server.registry.resolve("regressor").batcher
    inline, executions = batcher.inline_executions, batcher.executions
    assert inline > 0
    big = np.random.default_rng(2).standard_normal((60_000, 8)).astype(np.float32)
    response = gw.predict("regressor", {"features": big})
    assert np.frombuffer(response.outputs[0].data, np.float32).shape == (60_000,)
    assert batcher.executions == executions + 1 and batcher.inline_executions == inline


def test_inline_execution_can_be_switched_off(make_gateway, demo_models):
    gw = make_gateway(model_repository=demo_models, inline_execution_below_us=0)
    _predict_many(gw)
    assert gw.server.registry.resolve("regressor").batcher.inline_executions == 0


def test_never_inline_where_faults_may_be_injected(make_gateway, demo_models):
    gw = make_gateway(model_repository=demo_models, inline_execution_below_us=10_000, allow_fault_injection=True)
    _predict_many(gw)
    assert gw.server.registry.resolve("regressor").batcher.inline_executions == 0
