"""The Open Inference Protocol over real gRPC on loopback, driven by tritonclient.grpc (a client
nobody here wrote): health, metadata, config, statistics, raw and typed inference,
classification, streaming, async inference, the admin calls, and every bad input's status."""
from __future__ import annotations

import asyncio
import pathlib
import queue
import shutil

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as tg
import tritonclient.grpc.aio as tg_aio
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

import grpc
from gateway._proto import gateway_pb2 as gpb
from tests.conftest import RunningGateway

LABELS = ["approve", "review", "decline"]
TOKEN = "t0ken-for-tests"


@pytest.fixture(scope="module")
def client(gateway):
    c = tg.InferenceServerClient(gateway.address)
    yield c
    c.close()


@pytest.fixture(scope="module")
def stub(gateway):
    """tritonclient's own generated stub, for messages its high-level API never sends."""
    with grpc.insecure_channel(gateway.address) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def _x(rows: int, width: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, width)).astype(np.float32)


def _input(x: np.ndarray, name: str = "features", datatype: str = "FP32") -> tg.InferInput:
    i = tg.InferInput(name, list(x.shape), datatype)
    i.set_data_from_numpy(x)
    return i


def _reference(gateway, model: str, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(gateway.server.repository / model / "1" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    return session.run(None, {"features": x})[0]


def _raises(code: str, call, *args, **kwargs) -> str:
    with pytest.raises(InferenceServerException) as info:
        call(*args, **kwargs)
    assert info.value.status() == f"StatusCode.{code}", info.value
    return info.value.message()


def test_health_and_metadata(gateway, client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("classifier") and client.is_model_ready("classifier", "1")
    assert not client.is_model_ready("nope") and not client.is_model_ready("classifier", "9")
    server = client.get_server_metadata(as_json=True)
    assert server["name"] == "onnx-inference-gateway"
    assert server["extensions"] == ["classification", "model_configuration", "statistics"]  # no admin token here
    meta = client.get_model_metadata("classifier", as_json=True)
    assert meta["name"] == "classifier" and meta["versions"] == ["1"] and meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "features", "datatype": "FP32", "shape": ["-1", "16"]}]
    assert meta["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": ["-1", "3"]}]
    assert "'nope' not found" in _raises("NOT_FOUND", client.get_model_metadata, "nope")
    # the same service also answers gateway.v1 on this port
    assert gateway.stub.GetModel(gpb.GetModelRequest(name="classifier")).name == "classifier"


def test_model_config_is_a_triton_model_config(gateway, client):
    config = client.get_model_config("classifier").config
    assert (config.name, config.platform, config.backend, config.max_batch_size) == \
        ("classifier", "onnxruntime_onnx", "onnxruntime", 64)
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [("features", 11, [16])]  # TYPE_FP32
    assert [(o.name, o.data_type, list(o.dims)) for o in config.output] == [("probabilities", 11, [3])]
    assert config.HasField("dynamic_batching")
    assert config.dynamic_batching.default_queue_policy.max_queue_size > 0
    assert config.instance_group[0].count >= 1
    assert "'nope' not found" in _raises("NOT_FOUND", client.get_model_config, "nope")


def test_infer_matches_onnxruntime_with_the_gateway_parameters(gateway, client):
    for model, width in (("classifier", 16), ("regressor", 8), ("wide_mlp", 256)):
        x = _x(3, width)
        result = client.infer(model, [_input(x)], request_id="req-7")
        got = result.as_numpy(result.get_response().outputs[0].name)
        np.testing.assert_allclose(got, _reference(gateway, model, x), rtol=1e-5, atol=1e-6)
        response = result.get_response()
        assert response.id == "req-7" and response.model_name == model and response.model_version == "1"
        assert response.parameters["served_by"].string_param == f"{model}@1"
        assert not response.parameters["degraded"].bool_param


def test_requested_outputs_and_classification(gateway, client):
    x = _x(4)
    probs = _reference(gateway, "classifier", x)
    result = client.infer("classifier", [_input(x)], outputs=[tg.InferRequestedOutput("probabilities", class_count=2)])
    top = result.as_numpy("probabilities")
    assert top.shape == (4, 2)
    for row, p in zip(top, probs):
        order = np.argsort(-p)[:2]
        parts = [entry.decode().split(":") for entry in row]
        assert [int(i) for _, i, _ in parts] == order.tolist()
        assert [label for _, _, label in parts] == [LABELS[i] for i in order]
        np.testing.assert_allclose([float(s) for s, _, _ in parts], p[order], rtol=1e-5)
    assert "'nope'" in _raises("INVALID_ARGUMENT", client.infer, "classifier", [_input(x)],
                               outputs=[tg.InferRequestedOutput("nope")])


def test_typed_contents_through_tritonclients_stub(gateway, stub):
    x = _x(2)
    request = service_pb2.ModelInferRequest(model_name="classifier", id="typed")
    tensor = request.inputs.add(name="features", datatype="FP32", shape=[2, 16])
    tensor.contents.fp32_contents.extend(x.ravel().tolist())
    response = stub.ModelInfer(request)
    got = np.frombuffer(response.raw_output_contents[0], np.float32).reshape(2, 3)
    np.testing.assert_allclose(got, _reference(gateway, "classifier", x), rtol=1e-5, atol=1e-6)
    out = request.outputs.add(name="probabilities")
    out.parameters["binary_data"].bool_param = False
    typed = stub.ModelInfer(request)
    assert not typed.raw_output_contents
    np.testing.assert_allclose(np.array(typed.outputs[0].contents.fp32_contents).reshape(2, 3), got, rtol=1e-6)


def _status(call, *args) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call(*args)
    return info.value.code(), info.value.details()


def test_bad_input_gets_a_clear_status(gateway, client, stub):
    x = _x(2)
    assert "expected dtype float32" in _raises("INVALID_ARGUMENT", client.infer, "classifier",
                                               [_input(x.astype(np.int64), datatype="INT64")])
    assert "features" in _raises("INVALID_ARGUMENT", client.infer, "classifier", [_input(_x(2, 5))])
    assert "'nope' not found" in _raises("NOT_FOUND", client.infer, "nope", [_input(x)])
    assert "version '9'" in _raises("NOT_FOUND", client.infer, "classifier", [_input(x)], model_version="9")
    _raises("DEADLINE_EXCEEDED", client.infer, "classifier", [_input(x)], timeout=1)  # Triton's timeout: 1 µs
    request = service_pb2.ModelInferRequest(model_name="classifier")
    request.inputs.add(name="features", datatype="FP32", shape=[2, 16])
    request.raw_input_contents.append(x.tobytes()[:-4])
    code, details = _status(stub.ModelInfer, request)
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "124 bytes of raw_input_contents" in details
    request.raw_input_contents[0] = x.tobytes()
    request.raw_input_contents.append(b"")
    code, details = _status(stub.ModelInfer, request)
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "2 raw_input_contents for 1 inputs" in details
    strings = service_pb2.ModelInferRequest(model_name="classifier")
    strings.inputs.add(name="features", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"a")
    code, details = _status(stub.ModelInfer, strings)
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "BYTES" in details


def test_async_infer_with_a_callback_and_the_asyncio_client(gateway, client):
    answers: queue.Queue = queue.Queue()
    xs = [_x(1, seed=i) for i in range(8)]
    for i, x in enumerate(xs):
        client.async_infer("classifier", [_input(x)], lambda result, error: answers.put((result, error)),
                           request_id=str(i))
    got = {}
    for _ in xs:
        result, error = answers.get(timeout=30)
        assert error is None
        got[result.get_response().id] = result.as_numpy("probabilities")
    for i, x in enumerate(xs):
        np.testing.assert_allclose(got[str(i)], _reference(gateway, "classifier", x), rtol=1e-5, atol=1e-6)

    async def main():
        async with tg_aio.InferenceServerClient(gateway.address) as aio:
            assert await aio.is_model_ready("regressor")
            results = await asyncio.gather(*(aio.infer("regressor", [_input(_x(2, 8, seed=i))]) for i in range(4)))
            return [r.as_numpy(r.get_response().outputs[0].name) for r in results]

    for i, y in enumerate(asyncio.run(main())):
        np.testing.assert_allclose(y, _reference(gateway, "regressor", _x(2, 8, seed=i)), rtol=1e-5, atol=1e-6)


def test_stream_answers_every_request_and_goes_on_after_errors(gateway):
    answers: queue.Queue = queue.Queue()
    c = tg.InferenceServerClient(gateway.address)
    try:
        c.start_stream(lambda result, error: answers.put((result, error)))
        c.async_stream_infer("classifier", [_input(_x(1))], request_id="ok-1")
        c.async_stream_infer("classifier", [_input(_x(1, 5))], request_id="bad-shape")
        c.async_stream_infer("nope", [_input(_x(1))], request_id="bad-model")
        c.async_stream_infer("classifier", [_input(_x(2, seed=3))], request_id="ok-2",
                             outputs=[tg.InferRequestedOutput("probabilities", class_count=1)])
        got = [answers.get(timeout=30) for _ in range(4)]
        c.stop_stream()
    finally:
        c.close()
    results = {r.get_response().id: r for r, e in got if e is None}
    errors = sorted(str(e.message()) for r, e in got if e is not None)
    assert set(results) == {"ok-1", "ok-2"}
    assert len(errors) == 2 and errors[0].startswith("INVALID_ARGUMENT: ") and errors[1].startswith("NOT_FOUND: ")
    np.testing.assert_allclose(results["ok-1"].as_numpy("probabilities"), _reference(gateway, "classifier", _x(1)),
                               rtol=1e-5, atol=1e-6)
    assert results["ok-2"].as_numpy("probabilities").shape == (2, 1)


def _stats(client, model: str):
    (s,) = client.get_inference_statistics(model).model_stats
    return s


def test_statistics_count_every_answer_consistently(gateway, client):
    before = _stats(client, "regressor")
    for rows in (1, 2, 3):
        client.infer("regressor", [_input(_x(rows, 8))])
    _raises("INVALID_ARGUMENT", client.infer, "regressor", [_input(_x(1, 3))])
    after = _stats(client, "regressor")
    i0, i1 = before.inference_stats, after.inference_stats
    assert i1.success.count - i0.success.count == 3 and i1.success.ns > i0.success.ns
    assert i1.fail.count - i0.fail.count == 1
    assert after.inference_count - before.inference_count == 6
    assert i1.queue.count == i1.compute_infer.count <= i1.success.count
    assert i1.compute_input.count == i1.compute_output.count == i1.compute_infer.count   # as perf_analyzer checks
    assert all(b.compute_input.count == b.compute_output.count == b.compute_infer.count for b in after.batch_stats)
    assert after.execution_count - before.execution_count == 3
    assert sum(b.compute_infer.count for b in after.batch_stats) == after.execution_count
    # per request (a batch's compute time once for each of its requests) and per execution
    assert 0 < sum(b.compute_infer.ns for b in after.batch_stats) <= i1.compute_infer.ns
    assert after.last_inference >= before.last_inference > 0
    everything = {(s.name, s.version) for s in client.get_inference_statistics().model_stats}
    assert {("classifier", "1"), ("regressor", "1"), ("wide_mlp", "1")} <= everything
    _raises("NOT_FOUND", client.get_inference_statistics, "nope")


def test_repository_index_and_admin_calls_are_off_without_a_token(client):
    index = client.get_model_repository_index(as_json=True)["models"]
    assert {(m["name"], m["version"], m["state"]) for m in index} == \
        {("classifier", "1", "READY"), ("regressor", "1", "READY"), ("wide_mlp", "1", "READY")}
    assert "admin calls are off" in _raises("FAILED_PRECONDITION", client.unload_model, "regressor",
                                            headers={"authorization": f"Bearer {TOKEN}"})
    assert client.is_model_ready("regressor")


def test_admin_calls_need_the_token(tmp_path, demo_models, make_gateway, caplog):
    root = tmp_path / "models"
    shutil.copytree(demo_models, root)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    gw: RunningGateway = make_gateway(model_repository=root, admin_token_file=token_file)
    c = tg.InferenceServerClient(gw.address)
    try:
        assert "model_repository" in c.get_server_metadata(as_json=True)["extensions"]
        _raises("UNAUTHENTICATED", c.unload_model, "regressor")
        _raises("PERMISSION_DENIED", c.unload_model, "regressor", headers={"authorization": "Bearer wrong"})
        assert c.is_model_ready("regressor")
        good = {"authorization": f"Bearer {TOKEN}"}
        c.unload_model("regressor", headers=good)
        assert not c.is_model_ready("regressor")
        _raises("NOT_FOUND", c.infer, "regressor", [_input(_x(1, 8))])
        index = {m["name"]: m for m in c.get_model_repository_index(as_json=True)["models"]}
        assert index["regressor"]["state"] == "UNAVAILABLE" and index["regressor"]["reason"] == "unloaded"
        c.load_model("regressor", headers=good)
        assert c.is_model_ready("regressor")
        again = c.infer("regressor", [_input(_x(1, 8))])
        assert again.get_response().parameters["served_by"].string_param == "regressor@1"
        _raises("NOT_FOUND", c.load_model, "nope", headers=good)
        events = gw.stub.ModelHistory(gpb.ModelHistoryRequest(model="regressor")).events  # newest first
        assert [(e.kind, e.source) for e in events[:2]] == [("loaded", "admin"), ("unloaded", "admin")]
        assert "RepositoryModelLoad" in events[0].detail and "RepositoryModelUnload" in events[1].detail
    finally:
        c.close()
    assert TOKEN not in caplog.text


def test_degraded_answers_say_so_in_their_parameters(tmp_path, demo_models, make_gateway):
    root = tmp_path / "models"
    (root / "primary" / "1").mkdir(parents=True)
    shutil.copy(demo_models / "classifier" / "1" / "model.onnx", root / "primary" / "1" / "model.onnx")
    (root / "primary" / "config.yaml").write_text(
        "labels: [approve, review, decline]\nfaults: {error_rate: 1.0}\n"
        "policy:\n  fallback: {chain: [{static: {probabilities: [0.6, 0.3, 0.1]}}]}\n")
    gw = make_gateway(model_repository=root, allow_fault_injection=True)
    with tg.InferenceServerClient(gw.address) as c:
        result = c.infer("primary", [_input(_x(1))])
    p = result.get_response().parameters
    assert p["degraded"].bool_param and p["fallback_reason"].string_param == "error"
    assert p["served_by"].string_param == "static"
    np.testing.assert_allclose(result.as_numpy("probabilities"), [[0.6, 0.3, 0.1]], rtol=1e-6)


def test_the_gateway_and_tritonclient_share_one_environment():
    """tritonclient's stubs (package inference) and the gateway's (gateway.oip) load in one process."""
    from gateway._proto import oip_pb2

    assert oip_pb2.DESCRIPTOR.package == "gateway.oip"
    assert service_pb2.DESCRIPTOR.package == "inference"
    assert pathlib.Path(tg.__file__).exists()


def test_bytes_that_are_no_request_get_invalid_argument_and_the_stream_goes_on(gateway):
    infer = gateway.channel.unary_unary("/inference.GRPCInferenceService/ModelInfer", request_serializer=None,
                                        response_deserializer=None)
    with pytest.raises(grpc.RpcError) as info:
        infer(b"\xff\xff\xff", timeout=10)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith("request is not a valid inference.ModelInferRequest (3 bytes)")
    meta = gateway.channel.unary_unary("/inference.GRPCInferenceService/ModelMetadata", request_serializer=None,
                                       response_deserializer=None)
    with pytest.raises(grpc.RpcError) as info:
        meta(b"\x07", timeout=10)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "inference.ModelMetadataRequest" in \
        info.value.details()
    good = service_pb2.ModelInferRequest(model_name="regressor", id="after")
    good.inputs.add(name="features", datatype="FP32", shape=[1, 8])
    good.raw_input_contents.append(_x(1, 8).tobytes())
    stream = gateway.channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer",
                                           request_serializer=None,
                                           response_deserializer=service_pb2.ModelStreamInferResponse.FromString)
    answers = list(stream(iter([b"\xff\xff\xff", good.SerializeToString()]), timeout=30))
    assert len(answers) == 2
    bad, ok = sorted(answers, key=lambda a: a.error_message == "")
    assert bad.error_message.startswith("INVALID_ARGUMENT: stream message 1 (counting from 1)")
    assert ok.error_message == "" and ok.infer_response.id == "after"


def test_refusals_are_counted_by_reason_as_on_gateway_v1(make_gateway, demo_models):
    gw = make_gateway(model_repository=demo_models)
    with tg.InferenceServerClient(gw.address) as c, grpc.insecure_channel(gw.address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        _raises("INVALID_ARGUMENT", c.infer, "classifier", [_input(_x(1).astype(np.int64), datatype="INT64")])
        _raises("NOT_FOUND", c.infer, "nope", [_input(_x(1))])
        bad = service_pb2.ModelInferRequest(model_name="classifier")
        bad.inputs.add(name="features", datatype="FP32", shape=[1, 16])
        bad.raw_input_contents.append(b"\0" * 3)
        _status(stub.ModelInfer, bad)
        strings = service_pb2.ModelInferRequest(model_name="regressor")
        strings.inputs.add(name="features", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"a")
        _status(stub.ModelInfer, strings)
        raw = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer", request_serializer=None,
                                  response_deserializer=None)
        with pytest.raises(grpc.RpcError):
            raw(b"\xff\xff\xff", timeout=10)
    got = {(r.model, r.status, r.reason): r.requests for r in gw.stub.GetStats(gpb.GetStatsRequest(window_s=60)).rejected}
    assert got == {("classifier", "INVALID_ARGUMENT", "dtype"): 1, ("", "NOT_FOUND", "unknown_model"): 1,
                   ("classifier", "INVALID_ARGUMENT", "malformed"): 1, ("regressor", "INVALID_ARGUMENT", "dtype"): 1,
                   ("", "INVALID_ARGUMENT", "malformed"): 1}
