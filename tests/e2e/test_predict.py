"""Predict over real gRPC on loopback: outputs, metadata, and every bad-input status."""
from __future__ import annotations

import concurrent.futures

import grpc
import numpy as np
import onnxruntime as ort
import pytest

from gateway._proto import gateway_pb2 as pb
from gateway.client import from_numpy
from tests.conftest import matmul_graph, outputs, save_model


def _features(rows: int, width: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, width)).astype(np.float32)


def test_predict_matches_onnxruntime_for_each_demo_model(gateway):
    for model, width in (("classifier", 16), ("regressor", 8), ("wide_mlp", 256)):
        x = _features(3, width)
        response = gateway.predict(model, {"features": x})
        session = ort.InferenceSession(str(gateway.server.repository / model / "1" / "model.onnx"),
                                       providers=["CPUExecutionProvider"])
        expected = session.run(None, {"features": x})[0]
        got = next(iter(outputs(response).values()))
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
        assert response.served_by == f"{model}@1"
        assert not response.degraded


def test_classifier_reports_confidence_and_labels(gateway):
    response = gateway.predict("classifier", {"features": _features(4)})
    probs = outputs(response)["probabilities"]
    np.testing.assert_allclose(response.confidence, probs.max(axis=1), rtol=1e-6)
    labels = ["approve", "review", "decline"]
    assert list(response.predicted_label) == [labels[i] for i in probs.argmax(axis=1)]


def test_request_id_is_echoed_or_generated(gateway):
    assert gateway.predict("regressor", {"features": _features(1, 8)}, request_id="abc-1").request_id == "abc-1"
    generated = gateway.predict("regressor", {"features": _features(1, 8)}).request_id
    assert len(generated) == 32


def test_version_pinning_and_metadata(gateway):
    assert gateway.predict("classifier", {"features": _features(1)}, version="1").version == "1"
    meta = gateway.stub.GetModel(pb.GetModelRequest(name="classifier"))
    assert meta.inputs[0].name == "features" and list(meta.inputs[0].shape) == [-1, 16]
    assert meta.inputs[0].dtype == pb.DATA_TYPE_FLOAT32
    assert list(meta.outputs[0].shape) == [-1, 3]
    assert meta.execution_provider == gateway.server.registry.resolve("classifier").model.session.get_providers()[0]
    assert list(meta.versions) == ["1"] and meta.max_batch_size == 64
    assert list(meta.labels) == ["approve", "review", "decline"]
    listed = {m.name: m for m in gateway.stub.ListModels(pb.ListModelsRequest()).models}
    assert set(listed) == {"classifier", "regressor", "wide_mlp"}
    assert all(m.state == "READY" and m.latest_version == "1" for m in listed.values())


def test_requested_outputs_only(gateway):
    response = gateway.predict("classifier", {"features": _features(1)}, output_names=["probabilities"])
    assert [t.name for t in response.outputs] == ["probabilities"]


def _expect(gateway, code: grpc.StatusCode, *fragments: str, **request_fields):
    with pytest.raises(grpc.RpcError) as info:
        gateway.stub.Predict(pb.PredictRequest(**request_fields), timeout=10)
    assert info.value.code() == code, info.value.details()
    for fragment in fragments:
        assert fragment in info.value.details()
    return info.value.details()


def _tensor(name="features", dtype=pb.DATA_TYPE_FLOAT32, shape=(1, 16), data=None):
    if data is None:
        data = np.zeros(shape, np.float32).tobytes()
    return pb.Tensor(name=name, dtype=dtype, shape=shape, data=data)


BAD_INPUTS = [
    ("unknown model", grpc.StatusCode.NOT_FOUND, ["'nope'", "classifier"],
     dict(model="nope", inputs=[_tensor()])),
    ("unknown version", grpc.StatusCode.NOT_FOUND, ["version '7'", "loaded versions: 1"],
     dict(model="classifier", version="7", inputs=[_tensor()])),
    ("missing input", grpc.StatusCode.INVALID_ARGUMENT, ["missing input 'features'", "float32[-1,16]"],
     dict(model="classifier", inputs=[])),
    ("extra input", grpc.StatusCode.INVALID_ARGUMENT, ["unexpected input 'extra'"],
     dict(model="classifier", inputs=[_tensor(), _tensor(name="extra")])),
    ("wrong dtype", grpc.StatusCode.INVALID_ARGUMENT, ["'features'", "expected dtype float32", "got float64"],
     dict(model="classifier", inputs=[_tensor(dtype=pb.DATA_TYPE_FLOAT64,
                                              data=np.zeros((1, 16), np.float64).tobytes())])),
    ("wrong rank", grpc.StatusCode.INVALID_ARGUMENT, ["'features'", "expected rank 2", "got rank 1"],
     dict(model="classifier", inputs=[_tensor(shape=(16,))])),
    ("wrong width", grpc.StatusCode.INVALID_ARGUMENT, ["'features'", "dimension 1 expected 16, got 15"],
     dict(model="classifier", inputs=[_tensor(shape=(1, 15))])),
    ("byte length", grpc.StatusCode.INVALID_ARGUMENT, ["'features'", "60 bytes", "needs 64"],
     dict(model="classifier", inputs=[_tensor(data=b"\0" * 60)])),
    ("negative dimension", grpc.StatusCode.INVALID_ARGUMENT, ["'features'", "negative"],
     dict(model="classifier", inputs=[_tensor(shape=(-1, 16), data=b"")])),
    ("oversized dimension", grpc.StatusCode.INVALID_ARGUMENT, ["'features'", "message limit"],
     dict(model="classifier", inputs=[_tensor(shape=(1 << 40, 16), data=b"")])),
    ("zero rows", grpc.StatusCode.INVALID_ARGUMENT, ["'features'", "batch dimension is 0"],
     dict(model="classifier", inputs=[_tensor(shape=(0, 16), data=b"")])),
    ("no dtype", grpc.StatusCode.INVALID_ARGUMENT, ["'features'", "dtype"],
     dict(model="classifier", inputs=[_tensor(dtype=pb.DATA_TYPE_UNSPECIFIED)])),
    ("duplicate input", grpc.StatusCode.INVALID_ARGUMENT, ["'features'", "more than once"],
     dict(model="classifier", inputs=[_tensor(), _tensor()])),
    ("unknown output", grpc.StatusCode.INVALID_ARGUMENT, ["unknown output 'logits'"],
     dict(model="classifier", inputs=[_tensor()], output_names=["logits"])),
    ("no model", grpc.StatusCode.INVALID_ARGUMENT, ["names no model"], dict(inputs=[_tensor()])),
]


@pytest.mark.parametrize("case,code,fragments,fields", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_gets_a_clear_status_and_the_server_keeps_serving(gateway, case, code, fragments, fields):
    _expect(gateway, code, *fragments, **fields)
    assert gateway.predict("classifier", {"features": _features(1)}).served_by == "classifier@1"


def test_message_over_the_limit_is_resource_exhausted(make_gateway, demo_models):
    gw = make_gateway(model_repository=demo_models, max_message_bytes=64 * 1024)
    big = _features(2048, 16)  # 128 KiB
    with pytest.raises(grpc.RpcError) as info:
        gw.predict("classifier", {"features": big})
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert gw.predict("classifier", {"features": _features(1)}).served_by == "classifier@1"


def test_onnxruntime_failure_is_internal_and_names_the_model(make_gateway, tmp_path):
    save_model(tmp_path / "models" / "fragile" / "1" / "model.onnx", matmul_graph(features="width"))
    gw = make_gateway(model_repository=tmp_path / "models")
    with pytest.raises(grpc.RpcError) as info:
        gw.predict("fragile", {"features": _features(1, 5)})
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert "fragile@1" in info.value.details()
    ok = gw.predict("fragile", {"features": _features(2, 16)})
    np.testing.assert_allclose(outputs(ok)["scores"], _features(2, 16).sum(axis=1, keepdims=True).repeat(3, 1),
                               rtol=1e-5)


def test_concurrent_batched_results_equal_unbatched(gateway):
    """Many concurrent requests of varying row counts are batched; each gets exactly its own rows."""
    rng = np.random.default_rng(7)
    inputs = [rng.standard_normal((int(rng.integers(1, 5)), 256)).astype(np.float32) for _ in range(48)]
    session = ort.InferenceSession(str(gateway.server.repository / "wide_mlp" / "1" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    batcher = gateway.server.registry.resolve("wide_mlp").batcher
    runs_before, requests_before = batcher.executions, batcher.executed_requests
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda x: gateway.predict("wide_mlp", {"features": x}), inputs))
    for x, response in zip(inputs, responses):
        np.testing.assert_allclose(outputs(response)["probabilities"], session.run(None, {"features": x})[0],
                                   rtol=1e-4, atol=1e-6)
    # The batcher really combined requests: fewer executions than requests.
    assert batcher.executed_requests - requests_before == len(inputs)
    assert batcher.executions - runs_before < len(inputs)


def test_stream_answers_are_matched_by_id_and_errors_stay_in_the_stream(gateway):
    rng = np.random.default_rng(3)
    rows = {f"r{i}": rng.standard_normal((1, 16)).astype(np.float32) for i in range(40)}

    def requests():
        for rid, x in rows.items():
            yield pb.PredictRequest(model="classifier", request_id=rid, inputs=[from_numpy("features", x)])
        yield pb.PredictRequest(model="classifier", request_id="bad", inputs=[_tensor(shape=(1, 3),
                                                                                        data=b"\0" * 12)])
        yield pb.PredictRequest(model="nope", request_id="missing", inputs=[_tensor()])

    answers = {a.request_id: a for a in gateway.stub.PredictStream(requests(), timeout=30)}
    assert set(answers) == set(rows) | {"bad", "missing"}
    session = ort.InferenceSession(str(gateway.server.repository / "classifier" / "1" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    for rid, x in rows.items():
        assert answers[rid].WhichOneof("result") == "response"
        np.testing.assert_allclose(outputs(answers[rid].response)["probabilities"],
                                   session.run(None, {"features": x})[0], rtol=1e-5)
    assert answers["bad"].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "dimension 1 expected 16, got 3" in answers["bad"].error.message
    assert answers["missing"].error.code == grpc.StatusCode.NOT_FOUND.value[0]


def test_stream_generates_ids_when_missing(gateway):
    reqs = [pb.PredictRequest(model="regressor", inputs=[from_numpy("features", _features(1, 8))])
            for _ in range(5)]
    answers = list(gateway.stub.PredictStream(iter(reqs), timeout=30))
    assert len(answers) == 5 and len({a.request_id for a in answers}) == 5
    assert all(a.response.request_id == a.request_id for a in answers)


def test_cancelling_an_idle_stream_leaves_the_server_healthy(gateway):
    def idle():
        yield pb.PredictRequest(model="regressor", request_id="only", inputs=[from_numpy("features", _features(1, 8))])
        import time

        time.sleep(0.5)  # then the client cancels while the server waits for more

    call = gateway.stub.PredictStream(idle(), timeout=30)
    assert next(call).request_id == "only"
    call.cancel()
    assert gateway.predict("regressor", {"features": _features(1, 8)}).served_by == "regressor@1"
