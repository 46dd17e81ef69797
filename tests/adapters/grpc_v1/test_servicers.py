"""The Gateway service's handlers, in-process (no server): every RPC of the proto has one, and each
takes raw bytes so that the adapter, not grpcio, parses them; Predict and PredictStream also give
grpcio their answers serialized (the adapter checks their size)."""
from __future__ import annotations

from gateway._proto import gateway_pb2 as pb
from gateway.adapters.grpc_v1.servicers import GatewayServicer
from gateway.api import CallTable
from gateway.core.dataplane import DataPlane
from gateway.core.registry import ModelRegistry


def test_every_rpc_has_a_handler_taking_raw_bytes():
    handlers = GatewayServicer(DataPlane(ModelRegistry()), CallTable(), max_message_bytes=1 << 20).method_handlers()
    methods = {m.name: m for m in pb.DESCRIPTOR.services_by_name["Gateway"].methods}
    assert set(handlers) == set(methods)
    for name, handler in handlers.items():
        method = methods[name]
        assert (handler.request_streaming, handler.response_streaming) == \
            (method.client_streaming, method.server_streaming), name
        assert handler.request_deserializer is None, name
        if name in ("Predict", "PredictStream"):
            assert handler.response_serializer is None
        else:
            response = getattr(pb, method.output_type.name)()
            assert handler.response_serializer(response) == response.SerializeToString()
