"""Hostile and malformed messages over real gRPC on loopback (issue 11, items 1-4): raw bytes that
do not parse, shapes numpy cannot hold, megabyte names, and stream messages whose handling fails
(in onnxruntime, in the adapter, or because the answer would not fit) — each gets its status and
a bounded message, every stream message exactly one answer, and a valid call after succeeds."""
from __future__ import annotations

import grpc
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from gateway._proto import gateway_pb2 as pb
from gateway.adapters.grpc_v1 import servicers
from gateway.api.text import MESSAGE_LIMIT_BYTES
from gateway.client import from_numpy
from tests.conftest import matmul_graph, parse_reason, save_model

PREDICT = "/gateway.v1.Gateway/Predict"
STREAM = "/gateway.v1.Gateway/PredictStream"


def _features(rows: int = 1, width: int = 16) -> np.ndarray:
    return np.random.default_rng(rows).standard_normal((rows, width)).astype(np.float32)


def _valid(request_id: str = "") -> bytes:
    return pb.PredictRequest(model="classifier", request_id=request_id,
                             inputs=[from_numpy("features", _features())]).SerializeToString()


def _tensor_request(model="classifier", name="features", shape=(1, 16), data=b"\0" * 64, **fields) -> bytes:
    return pb.PredictRequest(model=model, inputs=[pb.Tensor(name=name, dtype=pb.DATA_TYPE_FLOAT32, shape=shape,
                                                            data=data)], **fields).SerializeToString()


HOSTILE = [
    ("corrupt wire format", b"\xff\xff\xff", grpc.StatusCode.INVALID_ARGUMENT,
     "request is not a valid gateway.v1.PredictRequest (3 bytes): " + parse_reason("Wire format was corrupt")),
    ("invalid UTF-8 in the model name", b"\x0a\x03a\xffc", grpc.StatusCode.INVALID_ARGUMENT,
     parse_reason("String field had bad UTF-8")),
    ("a group on the wire", b"\x2b" + b"\x7a\x80\x80\x04" + b"\0" * 65536, grpc.StatusCode.INVALID_ARGUMENT,
     "field 5 has wire type 3"),
    ("rank above numpy's limit", _tensor_request(shape=[1] * 65, data=b"\0" * 4), grpc.StatusCode.INVALID_ARGUMENT,
     "input 'features': rank 65 is more than the 64 dimensions"),
    ("rank 100000", _tensor_request(shape=[1] * 100_000, data=b""), grpc.StatusCode.INVALID_ARGUMENT,
     "input 'features': shape has more than the 64 dimensions"),
    ("zero beside a huge dimension", _tensor_request(shape=[0, 1 << 62], data=b""),
     grpc.StatusCode.INVALID_ARGUMENT, "shape [0, 4611686018427387904] is empty but"),
    ("a 1 MB model name", _tensor_request(model="m" * 1_000_000), grpc.StatusCode.NOT_FOUND,
     "… (1000000 chars) not found (models: classifier, regressor, wide_mlp)"),
    ("a 1 MB version", _tensor_request(version="7" * 1_000_000), grpc.StatusCode.NOT_FOUND,
     "has no version '777"),
    ("a 1 MB tensor name", _tensor_request() + pb.PredictRequest(inputs=[pb.Tensor(  # (messages concatenate)
        name="t" * 1_000_000, dtype=pb.DATA_TYPE_UINT8, shape=[0])]).SerializeToString(),
     grpc.StatusCode.INVALID_ARGUMENT, "unexpected input 'ttt"),
    ("a 1 MB output name", _tensor_request(output_names=["o" * 1_000_000]), grpc.StatusCode.INVALID_ARGUMENT,
     "unknown output 'ooo"),
    ("20000 empty tensors", b"\x0a\x0aclassifier" + b"\x22\x00" * 20_000 + b"\x7a\x80\x80\x04" + b"\0" * 65536,
     grpc.StatusCode.INVALID_ARGUMENT, "request has more than 1024 input tensors"),
]


@pytest.mark.parametrize("case,data,code,fragment", HOSTILE, ids=[c[0] for c in HOSTILE])
def test_hostile_bytes_get_their_status_with_a_bounded_message(gateway, case, data, code, fragment):
    call = gateway.channel.unary_unary(PREDICT, request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.RpcError) as info:
        call(data, timeout=10)
    assert info.value.code() == code, info.value.details()
    assert fragment in info.value.details()
    assert len(info.value.details().encode()) <= MESSAGE_LIMIT_BYTES
    assert pb.PredictResponse.FromString(call(_valid("after"), timeout=10)).request_id == "after"


@pytest.mark.parametrize("method,data,reason", [
    ("GetModel", b"\x0a\x03a\xffc", "String field had bad UTF-8"),
    ("GetStats", b"\x0d\x00", "Wire format was corrupt"),
    ("ListModels", b"\x07", "Wire format was corrupt"),
])
def test_the_other_calls_refuse_bytes_that_do_not_parse(gateway, method, data, reason):
    call = gateway.channel.unary_unary(f"/gateway.v1.Gateway/{method}", request_serializer=None,
                                       response_deserializer=None)
    with pytest.raises(grpc.RpcError) as info:
        call(data, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == \
        f"request is not a valid gateway.v1.{method}Request ({len(data)} bytes): {parse_reason(reason)}"
    assert pb.ModelMetadata.FromString(call_model(gateway)).name == "classifier"


def call_model(gateway) -> bytes:
    call = gateway.channel.unary_unary("/gateway.v1.Gateway/GetModel", request_serializer=None,
                                       response_deserializer=None)
    return call(pb.GetModelRequest(name="classifier").SerializeToString(), timeout=10)


def _stream(gateway, messages: list[bytes]) -> list[pb.PredictStreamResponse]:
    call = gateway.channel.stream_stream(STREAM, request_serializer=None,
                                         response_deserializer=pb.PredictStreamResponse.FromString)
    return list(call(iter(messages), timeout=30))


def test_a_stream_answers_every_message_around_one_that_does_not_parse(gateway):
    answers = _stream(gateway, [_valid("a"), b"\xff\xff", _valid("b"),
                                _tensor_request(shape=[0, 1 << 62], data=b"", request_id="huge"), _valid("c")])
    assert len(answers) == 5
    by_id = {a.request_id: a for a in answers}
    assert {k: by_id[k].WhichOneof("result") for k in ("a", "b", "c", "huge", "")} == \
        {"a": "response", "b": "response", "c": "response", "huge": "error", "": "error"}
    assert by_id["huge"].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    unparsed = by_id[""].error
    assert unparsed.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert unparsed.message.startswith("stream message 2 (counting from 1; its request_id is unknown): "
                                       "request is not a valid gateway.v1.PredictRequest (2 bytes)")


@pytest.fixture
def troubled(make_gateway, tmp_path):
    """A gateway with a model whose onnxruntime run fails on a wrong width (``fragile``), a
    classifier whose first label cannot be encoded (``mislabelled``: the answer fails in the
    adapter, a bug), and a model whose answer is 1 MiB per row (``tile``)."""
    models = tmp_path / "models"
    save_model(models / "fragile" / "1" / "model.onnx", matmul_graph(features="width"))
    save_model(models / "mislabelled" / "1" / "model.onnx", helper.make_graph(
        [helper.make_node("Identity", ["features"], ["probabilities"])], "identity",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3])]))
    # YAML's "\ud800" is a lone surrogate: a str protobuf refuses to encode
    (models / "mislabelled" / "config.yaml").write_text('labels: ["\\ud800", "b", "c"]\n')
    reps = numpy_helper.from_array(np.array([1, 1024], np.int64), "reps")
    save_model(models / "tile" / "1" / "model.onnx", helper.make_graph(
        [helper.make_node("Tile", ["features", "reps"], ["big"])], "tile",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 256])],
        [helper.make_tensor_value_info("big", TensorProto.FLOAT, ["batch", 262144])], [reps]))
    return make_gateway(model_repository=models, max_message_bytes=4 << 20)


def _request(model: str, request_id: str, x: np.ndarray) -> bytes:
    return pb.PredictRequest(model=model, request_id=request_id, inputs=[from_numpy("features", x)]).SerializeToString()


def test_a_stream_answers_every_message_whatever_fails_while_it_is_handled(troubled):
    first, second = np.array([[1, 0, 0]], np.float32), np.array([[0, 1, 0]], np.float32)
    answers = _stream(troubled, [
        _request("fragile", "runtime-error", _features(1, 5)),      # onnxruntime raises
        _request("fragile", "ok-1", _features(2, 16)),
        _request("mislabelled", "bug", first),                      # encoding the answer raises
        _request("mislabelled", "ok-2", second),
        _request("tile", "too-big", np.ones((8, 256), np.float32)),  # 8 MiB answer, 4 MiB limit
        _request("tile", "ok-3", np.ones((1, 256), np.float32)),
    ])
    by_id = {a.request_id: a for a in answers}
    assert len(answers) == 6 and set(by_id) == {"runtime-error", "ok-1", "bug", "ok-2", "too-big", "ok-3"}
    for ok in ("ok-1", "ok-2", "ok-3"):
        assert by_id[ok].WhichOneof("result") == "response", by_id[ok].error.message
    assert list(by_id["ok-2"].response.predicted_label) == ["b"]
    assert by_id["runtime-error"].error.code == grpc.StatusCode.INTERNAL.value[0]
    assert "fragile@1" in by_id["runtime-error"].error.message
    assert by_id["bug"].error.code == grpc.StatusCode.INTERNAL.value[0]
    assert by_id["bug"].error.message.startswith("internal error: UnicodeEncodeError")
    assert by_id["too-big"].error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert "more than the 4194304-byte message limit" in by_id["too-big"].error.message


def test_predict_answers_a_bug_with_internal_and_keeps_serving(troubled):
    call = troubled.channel.unary_unary(PREDICT, request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.RpcError) as info:
        call(_request("mislabelled", "bug", np.array([[1, 0, 0]], np.float32)), timeout=10)
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert info.value.details().startswith("internal error: UnicodeEncodeError")
    with pytest.raises(grpc.RpcError) as info:
        call(_request("tile", "too-big", np.ones((8, 256), np.float32)), timeout=10)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "the answer to request 'too-big' would be" in info.value.details()
    answer = pb.PredictResponse.FromString(call(_request("mislabelled", "ok", np.array([[0, 0, 1]], np.float32)),
                                                timeout=10))
    assert list(answer.predicted_label) == ["c"]


def test_a_stream_reads_no_further_than_its_pending_bound(make_gateway, repo, monkeypatch):
    """With the bound at 1 the stream reads its next message only once the previous answer is
    written: a slow request answers before a fast one sent after it (at the default bound the
    fast one's answer, in completion order, would come first)."""
    (repo / "classifier" / "config.yaml").write_text(
        (repo / "classifier" / "config.yaml").read_text() + "faults: {latency_ms: 300}\n")
    gw = make_gateway(model_repository=repo, allow_fault_injection=True)
    monkeypatch.setattr(servicers, "STREAM_MAX_PENDING", 1)
    answers = _stream(gw, [_request("classifier", "slow", _features()), _request("regressor", "fast", _features(1, 8))])
    assert [a.request_id for a in answers] == ["slow", "fast"]
    assert all(a.WhichOneof("result") == "response" for a in answers)
