"""The server process: load the repository, serve gRPC, reload on change, drain on SIGTERM."""
from __future__ import annotations

import asyncio
import logging
import pathlib
import signal
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from .._proto import gateway_pb2 as pb
from .._proto import gateway_pb2_grpc as pb_grpc
from ..config.settings import GatewaySettings
from ..core.dataplane import DataPlane
from ..core.registry import ModelRegistry
from ..repository.manager import RepositoryManager
from .servicers import GatewayServicer

log = logging.getLogger("gateway.server")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Gateway"].full_name


def _make_telemetry(settings: GatewaySettings):
    if not settings.telemetry.enabled:
        return None
    from ..telemetry import Telemetry

    t = settings.telemetry
    return Telemetry(enabled=True, ring_capacity=t.ring_capacity, histogram_max_buckets=t.histogram_max_buckets,
                     input_stats_sample_every=t.input_stats_sample_every,
                     aggregate_interval_s=t.aggregate_interval_s)


class GatewayServer:
    """Everything one ``gateway serve`` runs; usable in-process by tests (``start``/``stop``)."""

    def __init__(self, settings: GatewaySettings):
        self.settings = settings
        if settings.model_repository is not None:
            self.repository = pathlib.Path(settings.model_repository)
        else:
            from ..demo import demo_repository

            self.repository = demo_repository()
        self.telemetry = _make_telemetry(settings)
        self.registry = ModelRegistry()
        self.dataplane = DataPlane(self.registry, self.telemetry)
        self.executor = ThreadPoolExecutor(settings.executor_threads, thread_name_prefix="onnx")
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._health = health_aio.HealthServicer()
        self._manager: RepositoryManager | None = None
        self._poller: asyncio.Task | None = None
        self._reloads: set[asyncio.Task] = set()
        self._ready = False
        self.export = None  # telemetry.otel.TelemetryExport
        self._fallback_log = None

    async def start(self) -> int:
        s = self.settings
        if not self.repository.is_dir():
            raise FileNotFoundError(f"model repository {self.repository} is not a directory")
        if self.telemetry is not None:
            self.telemetry.start()
        limit = s.max_message_bytes
        self._server = grpc.aio.server(options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            ("grpc.so_reuseport", 0),
        ])
        servicer = GatewayServicer(self.dataplane, max_message_bytes=limit)
        self._start_export(servicer)
        pb_grpc.add_GatewayServicer_to_server(servicer, self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            self._server)
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        self.port = self._server.add_insecure_port(f"{s.host}:{s.port}")
        await self._server.start()
        log.info("listening on %s:%d (model repository %s)", s.host, self.port, self.repository,
                 extra={"event": "server.listening"})
        self._manager = RepositoryManager(self.repository, self.registry, self.executor, s, self.telemetry)
        await self._manager.reload()
        if not any(e.versions for e in self.registry.entries()):
            log.warning("no model could be loaded from %s", self.repository,
                        extra={"event": "server.no_models"})
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        self._ready = True
        log.info("ready: %s", ", ".join(f"{e.name} ({e.state.lower()})" for e in self.registry.entries()) or
                 "no models", extra={"event": "server.ready"})
        if s.reload_interval_s > 0:
            self._poller = asyncio.create_task(self._manager.poll(s.reload_interval_s))
        return self.port

    def _start_export(self, servicer: GatewayServicer) -> None:
        from ..logs import AccessLog, FallbackEventLog
        from ..policy import events as policy_events
        from ..telemetry.otel import TelemetryExport

        s = self.settings
        self.export = TelemetryExport(
            self.telemetry, dataplane=self.dataplane, registry=self.registry,
            max_features=s.telemetry.export_max_features, span_queue=s.telemetry.span_queue,
            admin_host=s.admin_host, admin_port=s.admin_port, ready=self.readiness)
        self.dataplane.traces = self.export.spans
        servicer.sampler = self.export.sampler
        if s.access_log:
            self.dataplane.access_log = AccessLog(s.access_log_sample_ratio, s.log_inputs)
        self._fallback_log = FallbackEventLog()
        policy_events.decision_hooks.append(self._fallback_log)
        self.export.start()

    def readiness(self) -> tuple[bool, str]:
        """Ready: started, at least one model version loaded, not draining."""
        if not self._ready:
            return False, "not ready: starting or draining"
        if not any(e.versions for e in self.registry.entries()):
            return False, "not ready: no model loaded"
        return True, "ready"

    async def _set_health(self, status) -> None:
        for name in ("", SERVICE_NAME):
            await self._health.set(name, status)

    def request_reload(self) -> None:
        """Rescan the repository now (SIGHUP)."""
        if self._manager is not None:
            log.info("reload requested: rescanning %s", self.repository, extra={"event": "repository.reload"})
            task = asyncio.get_running_loop().create_task(self._manager.reload())
            self._reloads.add(task)
            task.add_done_callback(self._reloads.discard)

    async def reload(self) -> None:
        await self._manager.reload()

    async def stop(self, grace_s: float | None = None) -> None:
        """NOT_SERVING, refuse new calls, let in-flight ones finish within the grace period."""
        grace = self.settings.grace_period_s if grace_s is None else grace_s
        self._ready = False
        await self._health.enter_graceful_shutdown()
        if self._poller is not None:
            self._poller.cancel()
        if self._server is not None:
            await self._server.stop(grace)
        if self._manager is not None:
            await self._manager.close()
        self.executor.shutdown(wait=True)
        if self.telemetry is not None:
            self.telemetry.stop()
        if self.export is not None:
            from ..policy import events as policy_events

            if self._fallback_log in policy_events.decision_hooks:
                policy_events.decision_hooks.remove(self._fallback_log)
            # blocking but bounded (min(OTEL_EXPORTER_OTLP_TIMEOUT, 5 s) per signal)
            await asyncio.get_running_loop().run_in_executor(None, self.export.stop)
        log.info("stopped", extra={"event": "server.stopped"})


async def serve(settings: GatewaySettings) -> int:
    server = GatewayServer(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, server.request_reload)
    await server.start()
    await stop.wait()
    log.info("shutting down: draining in-flight requests (grace %.1f s)", settings.grace_period_s,
             extra={"event": "server.draining"})
    await server.stop()
    return 0
