from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gateway._proto import oip_pb2 as pb
from gateway.adapters.oip import converters, datatypes
from gateway.api import BatchingInfo, GatewayError, InferResponse, ModelMetadata, ModelSummary, Status, TensorSpec
from gateway.api.stats import BatchSizeTotal, LatencySummary, ModelStatsSnapshot, PhaseTotal, VersionTotals

DTYPES = st.sampled_from(sorted(datatypes.NUMPY_TO_NAME, key=str))


def _request(*inputs, raw=None, outputs=(), **fields) -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name=fields.pop("model_name", "m"), **fields)
    msg.inputs.extend(inputs)
    if raw is not None:
        msg.raw_input_contents.extend(raw)
    msg.outputs.extend(outputs)
    return msg


def _decode(msg: pb.ModelInferRequest, max_bytes: int = 1 << 20):
    return converters.to_infer_request(msg, t_received_ns=1, deadline_ns=0, max_bytes=max_bytes)


def _input(name="x", datatype="FP32", shape=(2, 3), **contents) -> pb.ModelInferRequest.InferInputTensor:
    tensor = pb.ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=shape)
    for field, values in contents.items():
        getattr(tensor.contents, field).extend(values)
    return tensor


def _error(msg, max_bytes: int = 1 << 20) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        _decode(msg, max_bytes)
    assert info.value.status is Status.INVALID_ARGUMENT
    return info.value


@given(hnp.arrays(DTYPES, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)))
def test_raw_inputs_decode_exactly(array):
    name = datatypes.name_of(array.dtype)
    request, _ = _decode(_request(_input("x", name, array.shape), raw=[array.tobytes()]))
    got = request.inputs["x"]
    assert got.dtype == array.dtype and got.shape == array.shape
    np.testing.assert_array_equal(got, array)


@pytest.mark.parametrize("name, field, values", [
    ("FP32", "fp32_contents", [1.5, -2.0]), ("FP64", "fp64_contents", [1e300, 2.0]),
    ("INT8", "int_contents", [-128, 127]), ("INT16", "int_contents", [-300, 300]),
    ("INT32", "int_contents", [1, -1]), ("INT64", "int64_contents", [2**40, -1]),
    ("UINT8", "uint_contents", [0, 255]), ("UINT16", "uint_contents", [65535, 1]),
    ("UINT32", "uint_contents", [2**32 - 1, 0]), ("UINT64", "uint64_contents", [2**64 - 1, 0]),
    ("BOOL", "bool_contents", [True, False]),
])
def test_typed_contents_decode_to_the_datatype(name, field, values):
    request, _ = _decode(_request(_input("x", name, (2,), **{field: values})))
    got = request.inputs["x"]
    assert got.dtype == datatypes.NAME_TO_NUMPY[name]
    np.testing.assert_array_equal(got, np.array(values, dtype=got.dtype))
    assert not got.flags.writeable


@given(st.sampled_from(["FP32", "FP64"]), st.lists(st.floats(width=32), max_size=40), st.booleans())
def test_typed_floats_are_read_from_their_wire_bytes_bit_for_bit(name, values, via_wire):
    dtype = datatypes.NAME_TO_NUMPY[name]
    field = datatypes.CONTENTS_FIELD[name]
    msg = _request(_input("x", name, (len(values),), **{field: values}))
    if via_wire:  # as the servicer gets it: parsed from bytes
        msg = converters.parse_infer_request(msg.SerializeToString())
    got = _decode(msg)[0].inputs["x"]
    assert got.dtype == dtype and not got.flags.writeable
    assert got.tobytes() == np.array(values, dtype=dtype).tobytes()


def test_large_typed_floats_cost_one_copy_and_integers_are_capped():
    import tracemalloc
    x = np.random.default_rng(0).standard_normal(1 << 20).astype(np.float32)
    msg = converters.parse_infer_request(_request(_input("x", "FP32", x.shape, fp32_contents=x.tolist()))
                                         .SerializeToString())
    tracemalloc.start()
    try:
        got = _decode(msg, 64 << 20)[0].inputs["x"]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.array_equal(got, x) and peak <= 2 * x.nbytes + (256 << 10), peak  # (value by value: 9 x)
    n = converters.TYPED_VARINT_MAX_VALUES
    request, _ = _decode(_request(_input("i", "INT8", (n,), int_contents=[1] * n)), 64 << 20)
    assert request.inputs["i"].shape == (n,)
    err = _error(_request(_input("i", "INT32", (n + 1,), int_contents=[1] * (n + 1))), 64 << 20)
    assert f"{n + 1} values in contents.int_contents: typed INT32 contents carry at most {n}" in err.message
    assert "raw_input_contents" in err.message and err.reason == "too_large"


def test_typed_values_that_do_not_fit_their_datatype_are_refused():
    assert "value 128 in contents.int_contents does not fit INT8" in _error(
        _request(_input("x", "INT8", (2,), int_contents=[1, 128]))).message
    assert "does not fit UINT8" in _error(_request(_input("x", "UINT8", (1,), uint_contents=[256]))).message


def test_errors_name_what_is_wrong():
    assert "3 raw_input_contents for 2 inputs" in _error(
        _request(_input("a", shape=(1,)), _input("b", shape=(1,)), raw=[b"\0" * 4] * 3)).message
    assert "needs 24" in _error(_request(_input(), raw=[b"\0" * 20])).message
    assert "datatype FP32 takes contents.fp32_contents, got contents.int_contents" in _error(
        _request(_input(int_contents=[1] * 6))).message
    assert "5 values in contents.fp32_contents but shape [2, 3] has 6" in _error(
        _request(_input(fp32_contents=[1.0] * 5))).message
    assert "no data" in _error(_request(_input())).message
    assert "both typed contents and raw_input_contents" in _error(
        _request(_input(fp32_contents=[1.0] * 6), raw=[b"\0" * 24])).message
    assert "BYTES (strings) is not supported" in _error(
        _request(_input("s", "BYTES", (1,), bytes_contents=[b"a"]))).message
    assert "unknown datatype 'FLOAT'" in _error(_request(_input(datatype="FLOAT"), raw=[b""])).message
    assert "FP16 data can only come in raw_input_contents" in _error(
        _request(_input(datatype="FP16", shape=(1,), fp32_contents=[1.0]))).message
    assert "dimension 1 is negative" in _error(_request(_input(shape=(2, -1)), raw=[b""])).message
    assert "message limit" in _error(_request(_input(shape=(1 << 20, 1 << 20)), raw=[b""]), 1 << 20).message
    assert "given more than once" in _error(
        _request(_input(shape=(1,)), _input(shape=(1,)), raw=[b"\0" * 4] * 2)).message
    assert "names no model" in _error(_request(_input(), model_name="")).message


def test_parse_refuses_bytes_that_are_no_message():
    with pytest.raises(GatewayError) as info:
        converters.parse(pb.ModelInferRequest, b"\x0a\xff\xff")
    assert info.value.status is Status.INVALID_ARGUMENT
    assert "inference.ModelInferRequest (3 bytes)" in info.value.message


def test_long_messages_are_scanned_before_they_are_parsed():
    many_outputs = _request(_input(shape=(1,)), raw=[b"\0" * 4],
                            outputs=[_asked(f"o{i}") for i in range(converters.MAX_OUTPUT_NAMES + 1)])
    many_outputs.id = "x" * converters.PRESCAN_ABOVE_BYTES  # (long enough to be scanned)
    with pytest.raises(GatewayError, match="more than 1024 requested outputs"):
        converters.parse_infer_request(many_outputs.SerializeToString())
    raw = _request(_input(shape=(1,)), raw=[b""] * (converters.MAX_INPUTS + 1), id="x" * (1 << 17))
    with pytest.raises(GatewayError, match="more than 1024 raw_input_contents"):
        converters.parse_infer_request(raw.SerializeToString())
    deep = _request(_input(shape=(1,) * 1000), id="x" * (1 << 17))  # (packed: 1000 bytes, refused unparsed)
    data = deep.SerializeToString()
    with pytest.raises(GatewayError, match=f"input 'x': shape has more than the {converters.MAX_RANK} dimensions"):
        converters.parse_infer_request(data)
    fine = _request(_input(shape=(1,)), raw=[b"\0" * 4], id="x" * (1 << 17))
    assert converters.parse_infer_request(fine.SerializeToString()).id == fine.id


def _asked(name: str, classes: int | None = None, binary: bool | None = None):
    o = pb.ModelInferRequest.InferRequestedOutputTensor(name=name)
    if classes is not None:
        o.parameters["classification"].int64_param = classes
    if binary is not None:
        o.parameters["binary_data"].bool_param = binary
    return o


def test_requested_outputs_name_the_outputs_and_their_parameters():
    x = np.zeros((1,), np.float32)
    request, wanted = _decode(_request(_input(shape=(1,)), raw=[x.tobytes()],
                                       outputs=[_asked("p", classes=2), _asked("q")]))
    assert request.output_names == ("p", "q")
    assert [(o.name, o.classes, o.typed) for o in wanted] == [("p", 2, False), ("q", 0, False)]
    assert "some requested outputs and not others" in _error(
        _request(_input(shape=(1,)), raw=[x.tobytes()], outputs=[_asked("p", binary=False), _asked("q")])).message
    bad = _asked("p")
    bad.parameters["classification"].string_param = "2"
    assert "'classification' must be a non-negative int64" in _error(
        _request(_input(shape=(1,)), raw=[x.tobytes()], outputs=[bad])).message


def _response(**outputs) -> InferResponse:
    return InferResponse("id-1", "m", "1", dict(outputs), served_by="m@1")


def test_answers_are_raw_with_the_gateway_parameters():
    y = np.arange(6, dtype=np.float32).reshape(2, 3)
    msg = converters.to_infer_response(_response(y=y), [])
    assert msg.id == "id-1" and msg.outputs[0].datatype == "FP32" and list(msg.outputs[0].shape) == [2, 3]
    np.testing.assert_array_equal(np.frombuffer(msg.raw_output_contents[0], np.float32).reshape(2, 3), y)
    assert msg.parameters["served_by"].string_param == "m@1" and not msg.parameters["degraded"].bool_param
    assert "fallback_reason" not in msg.parameters
    degraded = _response(y=y)
    degraded.degraded, degraded.fallback_reason, degraded.served_by = True, "breaker_open", "static"
    msg = converters.to_infer_response(degraded, [])
    assert msg.parameters["degraded"].bool_param and msg.parameters["fallback_reason"].string_param == "breaker_open"
    assert msg.parameters["served_by"].string_param == "static"


def test_typed_answers_when_every_output_asks_for_them():
    y = np.array([1, -2], dtype=np.int64)
    msg = converters.to_infer_response(_response(y=y), [converters.OutputRequest("y", typed=True)])
    assert not msg.raw_output_contents and list(msg.outputs[0].contents.int64_contents) == [1, -2]


@given(hnp.arrays(st.sampled_from([np.float32, np.float64]),
                  hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6)))
def test_typed_float_answers_carry_the_values_bit_for_bit(y):
    msg = converters.to_infer_response(_response(y=y), [converters.OutputRequest("y", typed=True)])
    out = msg.outputs[0]
    field = "fp32_contents" if y.dtype == np.float32 else "fp64_contents"
    assert list(out.shape) == list(y.shape) and not msg.raw_output_contents
    wire = out.contents.SerializeToString()  # the packed values themselves: NaN payloads too
    assert wire[-y.nbytes:] == y.tobytes() if y.size else not wire
    np.testing.assert_array_equal(np.array(getattr(out.contents, field), dtype=y.dtype), y.ravel())


def test_classification_answers_the_top_classes_with_labels():
    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]], np.float32)
    got = converters.classify("p", scores, 2, ["a", "b", "c"])
    assert got.tolist() == [[b"0.700000:1:b", b"0.200000:2:c"], [b"0.500000:0:a", b"0.300000:2:c"]]
    assert converters.classify("p", scores[0], 9, []).tolist() == [b"0.700000:1", b"0.200000:2", b"0.100000:0"]
    with pytest.raises(GatewayError, match="cannot be classified"):
        converters.classify("p", np.zeros((2, 2, 2), np.float32), 1, [])
    msg = converters.to_infer_response(_response(p=scores), [converters.OutputRequest("p", classes=1)], ["a", "b", "c"])
    assert msg.outputs[0].datatype == "BYTES" and list(msg.outputs[0].shape) == [2, 1]
    raw = msg.raw_output_contents[0]
    assert raw == struct.pack("<I", 12) + b"0.700000:1:b" + struct.pack("<I", 12) + b"0.500000:0:a"


def _metadata(batching: BatchingInfo | None, max_batch_size: int = 8) -> ModelMetadata:
    return ModelMetadata(
        name="m", version="2", versions=("1", "2"), platform="onnxruntime", execution_provider="CPUExecutionProvider",
        inputs=(TensorSpec("x", np.dtype("<f4"), (-1, 4)),), outputs=(TensorSpec("y", np.dtype("<i8"), (-1,)),),
        max_batch_size=max_batch_size, labels=("a", "b"), state="READY", batching=batching, instance_count=2)


def test_model_config_leaves_the_batch_dimension_out_when_the_model_batches():
    config = converters.model_config(_metadata(BatchingInfo(100, (4, 8), 16)))
    assert config.platform == "onnxruntime_onnx" and config.max_batch_size == 8
    assert list(config.input[0].dims) == [4] and config.input[0].data_type == pb.TYPE_FP32
    assert list(config.output[0].dims) == [] and config.output[0].data_type == pb.TYPE_INT64
    assert config.WhichOneof("scheduling_choice") == "dynamic_batching"
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    assert config.dynamic_batching.max_queue_delay_microseconds == 100
    assert config.dynamic_batching.default_queue_policy.max_queue_size == 16
    assert config.instance_group[0].count == 2 and config.instance_group[0].kind == pb.ModelInstanceGroup.KIND_CPU
    unbatched = converters.model_config(_metadata(None, max_batch_size=0))
    assert list(unbatched.input[0].dims) == [-1, 4] and unbatched.WhichOneof("scheduling_choice") is None


def test_statistics_carry_the_running_totals():
    lat = LatencySummary(0, 0, 0, 0, 0)
    totals = VersionTotals(PhaseTotal(5, 500), PhaseTotal(1, 10), PhaseTotal(4, 40), PhaseTotal(4, 80), rows=9,
                           executions=3, batches=(BatchSizeTotal(1, 1, 20), BatchSizeTotal(4, 2, 60)),
                           last_unix_ms=123)
    snap = ModelStatsSnapshot("m", "1", 6, lat, lat, lat, 0, 0, 0, 0, 0, 0, [], totals=totals)
    s = converters.model_statistics(snap)
    assert (s.inference_count, s.execution_count, s.last_inference) == (9, 3, 123)
    i = s.inference_stats
    assert (i.success.count, i.success.ns, i.fail.count, i.queue.ns, i.compute_infer.ns) == (5, 500, 1, 40, 80)
    assert [(b.batch_size, b.compute_infer.count, b.compute_infer.ns) for b in s.batch_stats] == [(1, 1, 20), (4, 2, 60)]


def test_repository_index_lists_versions_failures_and_unloaded_models():
    models = [ModelSummary("a", ("1", "2"), "2", "READY", "", "cpu"),
              ModelSummary("b", (), "", "UNAVAILABLE", "1: bad file", "")]
    index = converters.repository_index(models, ["c"], ready_only=False)
    assert [(m.name, m.version, m.state, m.reason) for m in index.models] == [
        ("a", "1", "READY", ""), ("a", "2", "READY", ""), ("b", "", "UNAVAILABLE", "1: bad file"),
        ("c", "", "UNAVAILABLE", "unloaded")]
    assert [m.name for m in converters.repository_index(models, ["c"], ready_only=True).models] == ["a", "a"]


def test_the_timeout_parameter_shortens_the_deadline():
    x = np.zeros((1,), np.float32)
    msg = _request(_input(shape=(1,)), raw=[x.tobytes()])
    msg.parameters["timeout"].int64_param = 2000  # µs
    request, _ = converters.to_infer_request(msg, t_received_ns=10, deadline_ns=0, max_bytes=1 << 20)
    assert request.deadline_ns == 10 + 2_000_000
    request, _ = converters.to_infer_request(msg, t_received_ns=10, deadline_ns=1000, max_bytes=1 << 20)
    assert request.deadline_ns == 1000
    msg.parameters["timeout"].int64_param = -1
    assert "'timeout' must be a positive int64" in _error(msg).message


def test_the_routing_key_parameter_is_the_requests_routing_key():
    x = np.zeros((1,), np.float32)
    msg = _request(_input(shape=(1,)), raw=[x.tobytes()])
    assert _decode(msg)[0].routing_key == ""
    msg.parameters["routing_key"].string_param = "user-42"
    assert _decode(msg)[0].routing_key == "user-42"
    msg.parameters["routing_key"].int64_param = 42
    assert "'routing_key' must be a string" in _error(msg).message
    msg.parameters["routing_key"].string_param = "k" * (converters.MAX_ROUTING_KEY_CHARS + 1)
    assert _error(msg).reason == "too_large"


def test_refusals_carry_the_reason_they_are_counted_by():
    assert _error(_request(_input(), raw=[b"\0" * 20])).reason == "malformed"
    assert _error(_request(_input("s", "BYTES", (1,), bytes_contents=[b"a"]))).reason == "dtype"
    assert _error(_request(_input(), model_name="")).reason == "no_model"
    assert _error(_request(_input(shape=(1 << 20, 1 << 20)), raw=[b""]), 1 << 20).reason == "too_large"


@pytest.mark.parametrize("id_chars", [0, 1, 120, 127, 128, 16_380, 16_384, 3_000_000])
def test_a_stream_answer_is_the_wrapper_protobuf_would_serialize(id_chars):
    answer = pb.ModelInferResponse(model_name="m", id="x" * id_chars, raw_output_contents=[b"\x00" * 40])
    wrapped = converters.stream_answer(answer.SerializeToString())
    assert wrapped == pb.ModelStreamInferResponse(infer_response=answer).SerializeToString()
    assert pb.ModelStreamInferResponse.FromString(wrapped).infer_response == answer
