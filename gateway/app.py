"""The composition root: builds every part by constructor injection, starts and stops them.

Nothing else wires parts together. Order of construction (each part gets what it uses):
call table → telemetry (+ monitoring that reads it) → registry → span pipeline → data plane
(request and decision observers) → metrics export → assembler → repository manager →
protocol adapters. ``start`` loads the repository and opens the ports; ``stop`` drains.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import pathlib
import signal
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Protocol

from .adapters.auth import AdminToken
from .adapters.grpc_v1.server import GrpcServer
from .adapters.oip import InferenceServicer
from .adapters.tracing import HeadSampler
from .api import CallTable
from .api.stats import Statistics
from .config.settings import GatewaySettings
from .core.assembly import Assembler, AssemblyOptions
from .core.dataplane import DataPlane
from .core.observers import Decisions
from .core.registry import ModelRegistry
from .core.shadow import ShadowBudget, Shadowing
from .adapters.grpc_v1.admin import AdminServicer
from .lifecycle.capture import RequestCapture
from .lifecycle.control import TrafficAdmin
from .lifecycle.history import VersionHistory
from .lifecycle.rollback import RollbackWatcher
from .logs import AccessLog, FallbackEventLog
from .memory import MemoryReturn, set_mmap_threshold
from .monitoring import MeanShift
from .monitoring.alerts import Alerts, VersionFacts
from .monitoring.monitor import DriftMonitor
from .monitoring.capture import PredictionCapture
from .monitoring.labels import PredictionStore
from .repository.manager import RepositoryManager
from .runtime import affinity
from .telemetry import Telemetry
from .telemetry.otel import ExportConfig, TelemetryExport, make_resource, otlp_exporters
from .telemetry.readers import StatsShare

if TYPE_CHECKING:
    from .adapters.admin_http import AdminServer

log = logging.getLogger("gateway.server")


class WorkerLink(Protocol):
    """What a worker process of ``gateway serve --workers N`` knows of the others
    (:mod:`gateway.workers.worker`): its index, and the other workers' statistics."""

    index: int

    def others(self, window_s: float) -> tuple[list[StatsShare], int, int]:
        """The other workers' shares over ``window_s``, the number of workers and restarts so far."""
        ...

    def push(self, target: str, payload: dict) -> tuple[int, int]:
        """POST ``payload`` to ``target`` of every other worker: (how many took it, how many others)."""
        ...


class GatewayServer:
    """Everything one ``gateway serve`` runs; usable in-process by tests (``start``/``stop``).

    ``metric_exporter`` / ``span_exporter`` replace the OTLP exporters the ``OTEL_*``
    environment would make (tests pass in-memory ones). ``worker``: this server is one worker
    process of several (``gateway serve --workers``): it listens with ``SO_REUSEPORT``, its
    resource names its index, and ``GetStats`` merges the other workers' statistics in."""

    def __init__(self, settings: GatewaySettings, *, metric_exporter=None, span_exporter=None,
                 worker: WorkerLink | None = None) -> None:
        s = self.settings = settings
        self._worker = worker
        if s.model_repository is not None:
            self.repository = pathlib.Path(s.model_repository)
        else:
            from .demo import demo_repository

            self.repository = demo_repository()
        self.calls = CallTable()
        self.shifts = MeanShift()
        self.drift = DriftMonitor(window_s=s.telemetry.drift_window_s, window_rows=s.telemetry.drift_window_rows,
                                  min_window_rows=s.telemetry.drift_min_window_rows)
        t = s.telemetry
        self.telemetry = Telemetry(
            ring_capacity=t.ring_capacity, histogram_max_buckets=t.histogram_max_buckets,
            input_stats_sample_every=t.input_stats_sample_every, aggregate_interval_s=t.aggregate_interval_s,
            change_ert_rows=t.change_expected_rows_between_false_alarms,
            calls=self.calls, periodic=(self.shifts.tick, self.drift.tick)) if t.enabled else None
        self.registry = ModelRegistry()
        self.history = VersionHistory(s.state_dir, max_events=s.history_max_events)
        # execution_cpus: the onnx threads, and those that create sessions, run apart (applied in start)
        self._cpus = affinity.plan(s.execution_cpus) if s.execution_cpus else None
        self.executor = ThreadPoolExecutor(s.executor_threads, thread_name_prefix="onnx",
                                           initializer=affinity.pin_execution)
        self._loader = ThreadPoolExecutor(2, thread_name_prefix="gateway-load", initializer=affinity.pin_execution) \
            if self._cpus is not None else None

        export_config = ExportConfig.from_env()
        if metric_exporter is None and span_exporter is None:
            metric_exporter, span_exporter = otlp_exporters(export_config)
        resource = make_resource({"gateway.worker.index": worker.index} if worker is not None else None)
        dropped = {"spans": 0, "metrics": 0}
        sampler = None
        spans = None
        if span_exporter is not None:
            sampler = HeadSampler.configured(export_config.sampler, export_config.sampler_ratio)
            if sampler.never:
                span_exporter.shutdown()
                sampler = None
            else:
                from .telemetry.otel.traces import SpanPipeline

                head = sampler
                spans = SpanPipeline(span_exporter, resource, self.calls, max_queue=t.span_queue, dropped=dropped,
                                     on_health=lambda ok: head.set_paused(not ok))
        sampler_in_force = sampler.describe() if sampler is not None else None
        if sampler is None:  # no spans, but a client's traceparent still names the trace in log lines
            sampler = HeadSampler.ids_only()

        observers: list = []
        if self.telemetry is not None:
            observers.append(self.telemetry.recorder)
        if spans is not None:
            observers.append(spans)
        if s.access_log:
            observers.append(AccessLog(s.access_log_sample_ratio, s.log_inputs))
        # answers kept for delayed labels (Feedback), only with a store size set
        self.predictions: PredictionStore | None = None
        if s.feedback_store_entries:
            self.predictions = PredictionStore(s.feedback_store_entries, s.feedback_ttl_s, window=s.feedback_window,
                                               max_rows=s.feedback_max_rows)
            observers.append(PredictionCapture(self.predictions, self.registry))
        # sampled capture of requests and answers for replay, only when configured
        self.capture: RequestCapture | None = None
        if s.capture.enabled:
            directory = s.capture.directory or (s.state_dir / "capture" if s.state_dir else pathlib.Path("capture"))
            self.capture = RequestCapture(s.capture, directory)
            observers.append(self.capture)
        decisions = Decisions((FallbackEventLog(),) + ((spans,) if spans is not None else ()))
        # alert rules over the same statistics as GetStats, on their own thread (off with telemetry)
        self.alerts: Alerts | None = None
        self._alert_log = None
        if s.alerts.enabled and self.telemetry is not None:
            from .telemetry.otel.alerts import EventLogExport

            self._alert_log = EventLogExport.from_env(resource, export_config.protocol)
            # (each worker's rules watch its own share: merged, every worker would fire each alert)
            self.alerts = Alerts(s.alerts, self._local_statistics, facts=self._alert_facts,
                                 emit=self._alert_log.emit if self._alert_log is not None else None)
        self.dataplane = DataPlane(self.registry, observers=tuple(observers), decisions=decisions,
                                   statistics=self._statistics if self.telemetry is not None else None,
                                   max_inflight_bytes=s.max_inflight_bytes or 0, feedback=self.predictions,
                                   alerts=self.alerts.listing if self.alerts is not None else None,
                                   history=self.history.events,
                                   on_labels=self.capture.on_labels if self.capture is not None else None,
                                   shadowing=Shadowing(ShadowBudget(s.shadow_max_in_flight, s.shadow_max_inflight_bytes,
                                                                    s.shadow_timeout_ms)))
        self.export = TelemetryExport(self.telemetry, config=export_config, resource=resource,
                                      metric_exporter=metric_exporter, spans=spans, dataplane=self.dataplane,
                                      max_features=t.export_max_features, dropped=dropped,
                                      sampler=sampler_in_force,
                                      quality=self.predictions.quality if self.predictions is not None else None,
                                      feedback_unknown=self._feedback_unknown,
                                      drift=self.drift.all if self.telemetry is not None else None,
                                      alerts=self.alerts.active if self.alerts is not None else None,
                                      rollbacks=self._rollback_counts)
        assembler = Assembler(self.executor, AssemblyOptions(
            batching=s.batching, inline_execution_below_us=s.inline_execution_below_us,
            allow_fault_injection=s.allow_fault_injection), observers=self.telemetry, decisions=decisions)
        self._manager = RepositoryManager(self.repository, self.registry, assembler,
                                          default_providers=s.execution_providers,
                                          allow_fault_injection=s.allow_fault_injection,
                                          on_reloaded=self._follow_registry, history=self.history,
                                          loader=self._loader)
        self.rollback = RollbackWatcher(self.registry, self._statistics_with_shadow, history=self.history,
                                        evaluate_every_s=s.rollback_evaluate_every_s)
        self._rollback_task: asyncio.Task | None = None
        self.traffic = TrafficAdmin(self.registry, history=self.history, rollback=self.rollback,
                                    reload=self.reload, references=self._references,
                                    peers=worker.push if worker is not None else None)
        self.rollback.before_change = self.traffic.remember
        token = AdminToken(s.admin_secret())
        oip = InferenceServicer(self.dataplane, self.calls, max_message_bytes=s.max_message_bytes, sampler=sampler,
                                admin=token, control=self._manager)
        self.grpc = GrpcServer(self.dataplane, self.calls, host=s.host, port=s.port,
                               max_message_bytes=s.max_message_bytes, sampler=sampler,
                               services=(oip, AdminServicer(self.traffic, token)), reuse_port=worker is not None)
        self.admin: AdminServer | None = None  # bound in start()
        self.port = 0
        self._started = False  # between start() and stop(): gRPC health follows the registry
        self._serving = False  # what gRPC health says now
        self._poller: asyncio.Task | None = None
        self._memory_return: asyncio.Task | None = None
        self._reloads: set[asyncio.Task] = set()

    def _feedback_unknown(self) -> int:
        return self.predictions.unknown if self.predictions is not None else 0

    def _alert_facts(self, model: str, version: str) -> VersionFacts:
        """A version's deadline (its policy's attempt, else default, timeout) and reference accuracy."""
        deadline = accuracy = None
        entry = self.registry.get(model)
        mv = entry.versions.get(version) if entry is not None else None
        if mv is not None:
            d = mv.policy.config.deadlines
            deadline = d.attempt_timeout_ms or d.default_timeout_ms
        if self.telemetry is not None:
            for st in self.telemetry.models():
                if st.model == model and st.version == version and st.reference is not None:
                    accuracy = st.reference.accuracy
        split = self.registry.split(model)
        under_split = split is not None or version in self.registry.weights(model)
        rolled_back = self.rollback.is_rolled_back(model, version) if under_split else None
        return VersionFacts(float(deadline) if deadline else None, accuracy, rolled_back)

    def _references(self, model: str) -> dict[str, str]:
        """Each loaded version's reference: given (its profile), captured, capturing ("" unmonitored)."""
        drift = self.drift.snapshots() if self.telemetry is not None else {}
        return {v: d.reference for (m, v), d in drift.items() if m == model and d is not None}

    def _rollback_counts(self) -> dict[tuple[str, str], int]:
        return dict(self.rollback.rollbacks)

    def _statistics_with_shadow(self, window_s: float) -> Statistics:
        # (a worker's rollbacks are its own: its registry's weights, judged on its own share)
        return dataclasses.replace(self._statistics(window_s, merged=False), shadow=self.dataplane.shadowing.snapshot())

    def _local_statistics(self, window_s: float) -> Statistics:
        return self._statistics(window_s, merged=False)

    def _statistics(self, window_s: float, *, merged: bool = True) -> Statistics:
        """What GetStats answers: this process's statistics, and with ``worker`` (and
        ``merged``) the other workers' merged in: counts add, histograms merge; drift, online
        quality, shadow pairs and the top shifts are this worker's (each sees a share of the
        connections)."""
        telemetry = self.telemetry
        assert telemetry is not None  # (the data plane gets this only with telemetry on)
        others: list[StatsShare] = []
        workers, restarts = 1, 0
        if merged and self._worker is not None:
            others, workers, restarts = self._worker.others(window_s)
        models = telemetry.snapshot(window_s, shifts=self.shifts.top_shifts,
                                    others=[p for o in others for p in o.parts])
        drift = self.drift.snapshots()
        models = [dataclasses.replace(m, drift=drift.get((m.model, m.version))) for m in models]
        ring_drops = telemetry.ring_drops + sum(o.ring_drops for o in others)
        unknown = sum(o.feedback_unknown for o in others)
        store = self.predictions
        if store is not None:
            quality = store.quality()
            models = [dataclasses.replace(m, quality=quality.get((m.model, m.version))) for m in models]
            unknown += store.unknown
        # (the data plane adds its own tally of refused requests to the others')
        others_rejected = tuple(r for o in others for r in o.rejected)
        return Statistics(models, ring_drops, feedback_unknown=unknown, rejected=others_rejected, workers=workers,
                          worker_restarts=restarts)

    def share(self, window_s: float) -> StatsShare:
        """This process's statistics over ``window_s`` in mergeable form (for the other workers)."""
        telemetry = self.telemetry
        if telemetry is None:
            return StatsShare([], 0, 0)
        return StatsShare(telemetry.window_parts(window_s), telemetry.ring_drops,
                          self.predictions.unknown if self.predictions is not None else 0,
                          self.dataplane.rejections.snapshot())

    async def start(self) -> int:
        s = self.settings
        if not self.repository.is_dir():
            raise FileNotFoundError(f"model repository {self.repository} is not a directory")
        self.grpc.check_address()  # before anything starts or logs: a taken port is all one hears
        if self._cpus is not None:
            affinity.apply(self._cpus)
        trim = self._tune_allocator()
        dataplane = self.dataplane
        self._memory_return = asyncio.create_task(MemoryReturn(
            lambda: dataplane.large_payload_bytes, lambda: dataplane.large_failed_bytes, trim=trim).run(),
            name="memory return")
        if self.telemetry is not None:
            self.telemetry.start()
        if self.alerts is not None:
            self.alerts.start()
        self._start_admin()
        self.export.start()
        if self._worker is None:
            await self._listen()
        await self._manager.reload()
        if not any(e.versions for e in self.registry.entries()):
            log.warning("no model could be loaded from %s", self.repository, extra={"event": "server.no_models"})
        if self._worker is not None:
            # a worker listens once its models are loaded: until then the kernel hands new
            # connections to the other workers (a restarted one fails none while it loads)
            await self._listen()
        self.dataplane.set_accepting(True)
        self._started = True
        await self._follow_registry()
        log.info("ready: %s", ", ".join(f"{e.name} ({e.state.lower()})" for e in self.registry.entries()) or
                 "no models", extra={"event": "server.ready"})
        if s.reload_interval_s > 0:
            self._poller = asyncio.create_task(self._manager.poll(s.reload_interval_s))
        if self.telemetry is not None:   # rollback rules read the statistics
            self._rollback_task = asyncio.create_task(self.rollback.run())
        return self.port

    async def _listen(self) -> None:
        self.port = await self.grpc.start()
        log.info("listening on %s:%d (model repository %s)", self.settings.host, self.port, self.repository,
                 extra={"event": "server.listening"})

    def _tune_allocator(self) -> bool:
        """Set glibc's mmap threshold; True where the heaps are to be trimmed after large requests."""
        threshold = self.settings.malloc_mmap_threshold_bytes
        if not threshold:
            return False
        libc = set_mmap_threshold(threshold)  # process-wide: the last server started sets it
        if libc is None:
            log.info("allocator: not glibc, malloc_mmap_threshold_bytes ignored", extra={"event": "server.allocator"})
            return False
        log.info("allocator: %s, blocks of %d bytes and more unmapped when freed, heaps trimmed after large "
                 "requests", libc, threshold, extra={"event": "server.allocator"})
        return True

    def _start_admin(self) -> None:
        s = self.settings
        if not s.admin_port:
            return
        from .adapters.admin_http import AdminServer

        try:
            self.admin = AdminServer(s.admin_host, s.admin_port, metrics_text=self.export.prometheus_text,
                                     content_type=self.export.prometheus_content_type, ready=self.dataplane.ready)
        except OSError as exc:  # serving matters more than the admin port
            log.error("admin HTTP port %s:%d unavailable (%s): no /metrics, /healthz, /readyz",
                      s.admin_host, s.admin_port, exc, extra={"event": "admin.bind_failed"})
            return
        self.admin.start()

    def readiness(self) -> tuple[bool, str]:
        return self.dataplane.ready()

    async def _follow_registry(self) -> None:
        """After each repository pass: gRPC health says what /readyz says (SERVING while at
        least one model version is loaded), so a balancer probing either sees the same."""
        if not self._started:  # starting (set once loaded) or draining (NOT_SERVING for good)
            return
        ready, why = self.dataplane.ready()
        if ready == self._serving:
            return
        self._serving = ready
        await self.grpc.set_serving(ready)
        if ready:
            log.info("health: SERVING (a model version is loaded)", extra={"event": "server.serving"})
        else:
            log.warning("health: NOT_SERVING (%s)", why.removeprefix("not ready: "),
                        extra={"event": "server.not_serving"})

    def request_reload(self) -> None:
        """Rescan the repository now (SIGHUP)."""
        log.info("reload requested: rescanning %s", self.repository, extra={"event": "repository.reload"})
        # an explicit ask: also retry what failed and has not changed since
        task = asyncio.get_running_loop().create_task(self._manager.reload(retry_failed=True))
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def reload(self, *, retry_failed: bool = False) -> None:
        await self._manager.reload(retry_failed=retry_failed)

    async def stop(self, grace_s: float | None = None) -> None:
        """NOT_SERVING, refuse new calls, let in-flight ones finish within the grace period."""
        grace = self.settings.grace_period_s if grace_s is None else grace_s
        self._started = False
        self.dataplane.set_accepting(False)
        if self._poller is not None:
            self._poller.cancel()
        if self._memory_return is not None:
            self._memory_return.cancel()
        if self._rollback_task is not None:
            self._rollback_task.cancel()
        await self.grpc.drain(grace)
        await self.dataplane.shadowing.drain()
        await self._manager.close()
        self.executor.shutdown(wait=True)
        if self._loader is not None:
            self._loader.shutdown(wait=True)
        if self._cpus is not None:
            affinity.restore(self._cpus)
        if self.alerts is not None:
            self.alerts.stop()
        if self._alert_log is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._alert_log.stop, 2.0)
        if self.telemetry is not None:
            self.telemetry.stop()
        # blocking but bounded (min(OTEL_EXPORTER_OTLP_TIMEOUT, 5 s) per signal)
        await asyncio.get_running_loop().run_in_executor(None, self.export.stop)
        if self.admin is not None:
            self.admin.stop()
        self.history.close()
        if self.capture is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.capture.stop, 5.0)
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
