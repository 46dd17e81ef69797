"""The gRPC server of gateway.v1: the Gateway service, grpc.health.v1 and reflection on one port."""
from __future__ import annotations

import logging

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from ..._proto import gateway_pb2_grpc as pb_grpc
from ...api import CallTable
from ...core.dataplane import DataPlane
from ..tracing import HeadSampler
from .servicers import SERVICE, GatewayServicer

log = logging.getLogger("gateway.server")


class GrpcServer:
    """Registers its calls in ``calls`` when built; ``start`` binds and serves NOT_SERVING until
    :meth:`set_serving`."""

    def __init__(self, dataplane: DataPlane, calls: CallTable, *, host: str, port: int, max_message_bytes: int,
                 sampler: HeadSampler | None = None) -> None:
        self._address = f"{host}:{port}"
        self.host = host
        self.port = 0
        self._server = grpc.aio.server(options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.so_reuseport", 0),
        ])
        self._health = health_aio.HealthServicer()
        servicer = GatewayServicer(dataplane, calls, max_message_bytes=max_message_bytes, sampler=sampler)
        pb_grpc.add_GatewayServicer_to_server(servicer, self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        reflection.enable_server_reflection(
            (SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            self._server)

    async def start(self) -> int:
        """Bind and start serving (health NOT_SERVING); returns the port bound."""
        await self.set_serving(False)
        self.port = self._server.add_insecure_port(self._address)
        await self._server.start()
        return self.port

    async def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE):
            await self._health.set(name, status)

    async def drain(self, grace_s: float) -> None:
        """NOT_SERVING, refuse new calls, let in-flight ones finish within ``grace_s``."""
        await self._health.enter_graceful_shutdown()
        await self._server.stop(grace_s)
