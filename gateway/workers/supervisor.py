"""The supervisor of ``gateway serve --workers N`` (design in :mod:`gateway.workers`).

It loads no model: it holds the port (a bound, non-listening ``SO_REUSEPORT`` socket, so that
nothing else takes it while a worker restarts, and so that port 0 names one port for all),
starts the workers, restarts the ones that die, serves the admin HTTP port for all of them and
forwards the signals.
"""
from __future__ import annotations

import asyncio
import logging
import os
import pathlib
import shutil
import signal
import socket
import sys
import time

from ..adapters.admin_http import AdminServer
from ..adapters.grpc_v1.server import ListenError, check_listenable
from ..config.settings import GatewaySettings
from . import channel, promtext, rundir

log = logging.getLogger("gateway.workers")

BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 30.0
#: A worker that lived this long before dying is restarted after BACKOFF_MIN_S again.
BACKOFF_RESET_S = 30.0
#: Beyond the grace period, how long the workers have to exit after SIGTERM before SIGKILL
#: (the drain also stops the model sessions and flushes telemetry, each bounded).
EXIT_SLACK_S = 15.0
ENDPOINT_TIMEOUT_S = 2.0


WORKER_TOKEN_ENV = "GATEWAY_WORKER_ADMIN_TOKEN"


def reserve_port(host: str, port: int) -> tuple[int, list[socket.socket]]:
    """Bind (not listen) ``SO_REUSEPORT`` sockets on every address ``host`` resolves to: the
    workers' listeners join them, nothing else can. Port 0 picks one. Raises ListenError."""
    check_listenable(host, port)
    try:
        infos = socket.getaddrinfo(host.strip("[]") or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(f"cannot listen on {host}:{port}: cannot resolve {host!r} ({exc.strerror})") from None
    held: list[socket.socket] = []
    try:
        for family, kind, proto, _, sockaddr in infos:
            sock = socket.socket(family, kind, proto)
            held.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((sockaddr[0], port) + tuple(sockaddr[2:]))
            port = sock.getsockname()[1]
    except OSError as exc:
        for sock in held:
            sock.close()
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", exc.errno) from None
    return port, held


def restart_delay(previous_s: float | None, lived_s: float) -> float:
    """How long to wait before starting again a worker that died after ``lived_s``;
    ``previous_s``: the wait before its previous restart (None: it never died before)."""
    if previous_s is None or lived_s >= BACKOFF_RESET_S:
        return BACKOFF_MIN_S
    return min(2 * previous_s, BACKOFF_MAX_S)


def _exit_text(rc: int) -> str:
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit code {rc}"


class Supervisor:
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.count = settings.workers
        self.restarts = [0] * self.count
        self.pids: list[int | None] = [None] * self.count
        self.port = 0
        self.admin: AdminServer | None = None
        self._procs: list[asyncio.subprocess.Process | None] = [None] * self.count
        self._exit_codes: list[int | None] = [None] * self.count
        self._stop = asyncio.Event()
        self._root = pathlib.Path()
        self._ready = False

    # -- the admin port ------------------------------------------------------------------
    def _socket(self, index: int) -> str:
        return str(rundir.socket_path(self._root, index))

    def ready(self) -> tuple[bool, str]:
        """Ready when every worker says it is (each: a model version loaded, not draining)."""
        if self._stop.is_set():
            return False, "not ready: stopping"
        problems = []
        for i in range(self.count):
            try:
                status, body = channel.get(self._socket(i), "/readyz", ENDPOINT_TIMEOUT_S)
            except OSError:
                problems.append(f"worker {i}: not running" if self.pids[i] is None else f"worker {i}: starting")
                continue
            if status != 200:
                problems.append(f"worker {i}: {body.strip().removeprefix('not ready: ')}")
        if problems:
            return False, "not ready: " + "; ".join(problems)
        return True, f"ready: {self.count} workers"

    def metrics_text(self) -> str:
        texts = []
        for i in range(self.count):
            try:
                status, body = channel.get(self._socket(i), "/metrics", ENDPOINT_TIMEOUT_S)
            except OSError:
                continue
            if status == 200:
                texts.append((str(i), body))
        own = [f"# workers merged: {len(texts)} of {self.count}",
               "# HELP gateway_workers Worker processes of this server (gateway serve --workers)",
               "# TYPE gateway_workers gauge", f"gateway_workers {self.count}",
               "# HELP gateway_workers_merged Workers whose metrics this scrape merged",
               "# TYPE gateway_workers_merged gauge", f"gateway_workers_merged {len(texts)}",
               "# HELP gateway_worker_restarts_total Workers that died and were started again",
               "# TYPE gateway_worker_restarts_total counter"]
        own += [f'gateway_worker_restarts_total{{worker="{i}"}} {n}' for i, n in enumerate(self.restarts)]
        return promtext.merge(texts) + "\n".join(own) + "\n"

    def _start_admin(self) -> None:
        s = self.settings
        if not s.admin_port:
            return
        from ..telemetry.otel.prometheus import CONTENT_TYPE

        try:
            self.admin = AdminServer(s.admin_host, s.admin_port, metrics_text=self.metrics_text,
                                     content_type=CONTENT_TYPE, ready=self.ready)
        except OSError as exc:  # serving matters more than the admin port
            log.error("admin HTTP port %s:%d unavailable (%s): no /metrics, /healthz, /readyz",
                      s.admin_host, s.admin_port, exc, extra={"event": "admin.bind_failed"})
            return
        self.admin.start()

    # -- the workers ---------------------------------------------------------------------
    async def _keep(self, index: int) -> None:
        """Run worker ``index`` until the server stops, restarting it when it dies."""
        delay: float | None = None
        argv = [sys.executable, "-m", "gateway.workers.worker", str(self._root), str(index), str(os.getpid())]
        while not self._stop.is_set():
            started = time.monotonic()
            proc = await asyncio.create_subprocess_exec(*argv, env=self._worker_env())
            self._procs[index], self.pids[index] = proc, proc.pid
            if self._stop.is_set():  # (the signal came while it was being started)
                proc.send_signal(signal.SIGTERM)
            log.info("worker %d started (pid %d)", index, proc.pid, extra={"event": "workers.started"})
            rc = await proc.wait()
            self._procs[index] = self.pids[index] = None
            if self._stop.is_set():
                self._exit_codes[index] = rc
                log.info("worker %d (pid %d) exited: %s", index, proc.pid, _exit_text(rc),
                         extra={"event": "workers.exited"})
                return
            lived_s = time.monotonic() - started
            delay = restart_delay(delay, lived_s)
            self.restarts[index] += 1
            rundir.write_state(self._root, rundir.State(self.count, tuple(self.restarts)))
            log.warning("worker %d (pid %d) died (%s) after %.1f s: restart %d in %.1f s", index, proc.pid,
                        _exit_text(rc), lived_s, self.restarts[index], delay, extra={"event": "workers.died"})
            try:
                await asyncio.wait_for(self._stop.wait(), delay)
            except asyncio.TimeoutError:
                pass
        self._exit_codes[index] = 0

    def _worker_env(self) -> dict[str, str]:
        """The workers' environment: this one's, plus the admin token given as a setting (the
        worker takes it out of its environment at once; never on a command line or in a file)."""
        env = dict(os.environ)
        token = self.settings.admin_token
        if token is not None:
            env[WORKER_TOKEN_ENV] = token.get_secret_value()
        return env

    def _signal_all(self, sig: int) -> None:
        for proc in self._procs:
            if proc is not None and proc.returncode is None:
                try:
                    proc.send_signal(sig)
                except ProcessLookupError:
                    pass

    def request_stop(self) -> None:
        if self._stop.is_set():
            return
        log.info("shutting down: %d workers draining in-flight requests (grace %.1f s)", self.count,
                 self.settings.grace_period_s, extra={"event": "server.draining"})
        self._stop.set()
        self._signal_all(signal.SIGTERM)

    async def _watch_readiness(self) -> None:
        """Log when all workers become ready, and when that stops."""
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            ready, why = await loop.run_in_executor(None, self.ready)
            if ready != self._ready and not self._stop.is_set():
                self._ready = ready
                if ready:
                    log.info("ready: %d workers serving on %s:%d", self.count, self.settings.host, self.port,
                             extra={"event": "workers.ready"})
                else:
                    log.warning("%s", why, extra={"event": "workers.not_ready"})
            try:
                await asyncio.wait_for(self._stop.wait(), 0.5 if not ready else 2.0)
            except asyncio.TimeoutError:
                pass

    async def run(self) -> int:
        s = self.settings
        if s.model_repository is not None and not pathlib.Path(s.model_repository).is_dir():
            raise FileNotFoundError(f"model repository {s.model_repository} is not a directory")
        self.port, held = reserve_port(s.host, s.port)
        self._root = rundir.make()
        try:
            worker_settings = s.model_copy(update={"port": self.port, "admin_port": 0})
            # (a SecretStr dumps as asterisks: the token goes to the workers in their environment)
            (self._root / rundir.SETTINGS).write_text(worker_settings.model_dump_json(exclude={"admin_token"}))
            rundir.write_state(self._root, rundir.State(self.count, tuple(self.restarts)))
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop)
            loop.add_signal_handler(signal.SIGHUP, self._signal_all, signal.SIGHUP)
            self._start_admin()
            log.info("listening on %s:%d with %d workers (run directory %s)", s.host, self.port, self.count,
                     self._root, extra={"event": "workers.listening"})
            keepers = [asyncio.create_task(self._keep(i), name=f"worker {i}") for i in range(self.count)]
            watcher = asyncio.create_task(self._watch_readiness(), name="readiness")
            await self._stop.wait()
            done, pending = await asyncio.wait(keepers, timeout=s.grace_period_s + EXIT_SLACK_S)
            if pending:
                log.error("%d workers still running %.0f s after SIGTERM: killing them", len(pending),
                          s.grace_period_s + EXIT_SLACK_S, extra={"event": "workers.killed"})
                self._signal_all(signal.SIGKILL)
                await asyncio.wait(pending, timeout=10)
            watcher.cancel()
            codes = self._exit_codes
            log.info("stopped (workers' exit codes %s)", ", ".join(str(c) for c in codes),
                     extra={"event": "server.stopped"})
            return 0 if all(c == 0 for c in codes) else 1
        finally:
            if self.admin is not None:
                self.admin.stop()
            for sock in held:
                sock.close()
            shutil.rmtree(self._root, ignore_errors=True)


async def serve(settings: GatewaySettings) -> int:
    return await Supervisor(settings).run()
