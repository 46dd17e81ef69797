"""Health and reflection on the same port as the gateway service."""
from __future__ import annotations

from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc


def test_health_is_serving_once_models_are_loaded(gateway):
    stub = health_pb2_grpc.HealthStub(gateway.channel)
    for service in ("", "gateway.v1.Gateway"):
        assert stub.Check(health_pb2.HealthCheckRequest(service=service)).status == \
            health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_services(gateway):
    stub = reflection_pb2_grpc.ServerReflectionStub(gateway.channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    response = next(stub.ServerReflectionInfo(iter([request])))
    names = {s.name for s in response.list_services_response.service}
    assert {"gateway.v1.Gateway", "grpc.health.v1.Health"} <= names
