"""The gRPC server of gateway.v1: the Gateway service, grpc.health.v1 and reflection on one port,
with the other protocols' services (``services``: the Open Inference Protocol's) beside them."""
from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Mapping, Sequence
from typing import Protocol

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from ... import _grpc_core
from ...api import CallTable
from ...core.dataplane import DataPlane
from ..tracing import HeadSampler
from .servicers import SERVICE, GatewayServicer

log = logging.getLogger("gateway.server")


class ListenError(OSError):
    """The gRPC address cannot be listened on; the message names it and why (``errno`` too,
    when known)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.errno = code


def check_listenable(host: str, port: int, *, reuse_port: bool = False) -> None:
    """Raise :class:`ListenError` unless some address ``host`` resolves to can take ``port``.

    gRPC binds every address the host resolves to and fails only when none binds, and then
    only with a bare ``RuntimeError`` (after a C-core log line); this tries the same addresses
    with plain sockets first, so the reason (address in use, not local, unresolvable) is known.
    Port 0 always binds. ``reuse_port``: probe with ``SO_REUSEPORT`` as the listener will set
    it, so a port that sibling processes listen on with it set is free.
    """
    if port == 0:
        return
    address = f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(host.strip("[]") or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(f"cannot listen on {address}: cannot resolve {host!r} ({exc.strerror})") from None
    reasons = []
    for family, kind, proto, _, sockaddr in infos:
        try:
            with socket.socket(family, kind, proto) as probe:
                # as gRPC does: a port whose last connections linger in TIME_WAIT is free
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if reuse_port:
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                probe.bind(sockaddr)
            return
        except OSError as exc:
            reasons.append(exc.errno)
    code = errno.EADDRINUSE if errno.EADDRINUSE in reasons else next((r for r in reasons if r), None)
    why = os.strerror(code).lower() if code else "no address to bind"
    raise ListenError(f"cannot listen on {address}: {why}", code)


class Service(Protocol):
    """Another protocol's service served on this port: its full name and its handlers."""

    name: str

    def method_handlers(self) -> Mapping[str, grpc.RpcMethodHandler]: ...


class GrpcServer:
    """Registers its calls in ``calls`` when built; ``start`` binds and serves NOT_SERVING until
    :meth:`set_serving`. ``services`` are served on the same port, their health following the
    server's (they are not listed by reflection: their messages are in a package of their own).
    ``reuse_port``: listen with ``SO_REUSEPORT``, so that the worker processes of one server
    share the port (Linux spreads connections over them)."""

    def __init__(self, dataplane: DataPlane, calls: CallTable, *, host: str, port: int, max_message_bytes: int,
                 sampler: HeadSampler | None = None, services: Sequence[Service] = (),
                 reuse_port: bool = False) -> None:
        self._address = f"{host}:{port}"
        self._requested_port = port
        self.host = host
        self.port = 0
        self._reuse_port = reuse_port
        self._server = grpc.aio.server(options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.so_reuseport", 1 if reuse_port else 0),
        ])
        self._health = health_aio.HealthServicer()
        servicer = GatewayServicer(dataplane, calls, max_message_bytes=max_message_bytes, sampler=sampler)
        handlers = servicer.method_handlers()  # (not the generated registration: raw request bytes)
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        self._server.add_registered_method_handlers(SERVICE, handlers)
        self._names = [SERVICE]
        for service in services:
            more = dict(service.method_handlers())
            self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.name, more),))
            self._server.add_registered_method_handlers(service.name, more)
            self._names.append(service.name)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        reflection.enable_server_reflection(
            (SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            self._server)

    def check_address(self) -> None:
        """Raise :class:`ListenError` now if the address cannot be listened on (so a server can
        refuse to start before it starts anything else)."""
        check_listenable(self.host, self._requested_port, reuse_port=self._reuse_port)

    async def start(self) -> int:
        """Bind and start serving (health NOT_SERVING); returns the port bound."""
        await self.set_serving(False)
        try:
            self.port = self._server.add_insecure_port(self._address)
        except RuntimeError:  # taken between check_listenable and here, or a reason it cannot see
            raise ListenError(f"cannot listen on {self._address} (gRPC could not bind it)") from None
        await self._server.start()
        if _grpc_core.too_late:
            log.warning("grpc was imported before gateway, so gRPC core's %s stays on: under floods of "
                        "short deadlines this server may answer calls CANCELLED by itself; start the "
                        "process with GRPC_EXPERIMENTS=%s (see gateway/_grpc_core.py)",
                        ", ".join(_grpc_core.too_late), ",".join(f"-{e}" for e in _grpc_core.too_late))
        return self.port

    async def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", *self._names):
            await self._health.set(name, status)

    async def drain(self, grace_s: float) -> None:
        """NOT_SERVING, refuse new calls, let in-flight ones finish within ``grace_s``."""
        await self._health.enter_graceful_shutdown()
        await self._server.stop(grace_s)
