"""Health and reflection on the same port as the gateway service; health follows the registry."""
from __future__ import annotations

import shutil
import urllib.error
import urllib.request

from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.conftest import free_port


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


def _health_and_readyz(gw, admin_port: int) -> tuple[set[int], int]:
    stub = health_pb2_grpc.HealthStub(gw.channel)
    statuses = {stub.Check(health_pb2.HealthCheckRequest(service=s), timeout=5).status
                for s in ("", "gateway.v1.Gateway")}
    try:
        code = urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/readyz", timeout=5).status
    except urllib.error.HTTPError as exc:
        code = exc.code
    return statuses, code


def test_health_follows_the_registry_as_readyz_does(make_gateway, tmp_path, demo_models):
    root = tmp_path / "models"
    root.mkdir()                                  # nothing to load yet
    admin_port = free_port()
    gw = make_gateway(model_repository=root, admin_port=admin_port)
    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    assert _health_and_readyz(gw, admin_port) == ({not_serving}, 503)
    shutil.copytree(demo_models / "regressor", root / "regressor")
    gw.reload()
    assert _health_and_readyz(gw, admin_port) == ({serving}, 200)
    shutil.rmtree(root / "regressor")             # the last version goes
    gw.reload()
    assert _health_and_readyz(gw, admin_port) == ({not_serving}, 503)
    (root / "broken" / "1").mkdir(parents=True)   # a model whose only version cannot load is not enough
    (root / "broken" / "1" / "model.onnx").write_bytes(b"not an onnx file")
    gw.reload()
    assert _health_and_readyz(gw, admin_port) == ({not_serving}, 503)
