"""One worker process of ``gateway serve --workers N``:
``python -m gateway.workers.worker RUNDIR INDEX SUPERVISOR_PID``.

Started by :mod:`.supervisor` only. Runs a :class:`~gateway.app.GatewayServer` on the shared
port (``SO_REUSEPORT``) with the settings the supervisor wrote, and its private endpoint
(:mod:`.channel`) at ``RUNDIR/w<INDEX>.sock``.
"""
from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import math
import os
import pathlib
import signal
import sys
from concurrent.futures import ThreadPoolExecutor

from pydantic import SecretStr

from .. import logs
from ..api import GatewayError
from ..api.stats import MAX_WINDOW_S
from ..app import GatewayServer
from ..config.settings import GatewaySettings
from ..telemetry.readers import StatsShare
from . import channel, codec, rundir
from .supervisor import WORKER_TOKEN_ENV

log = logging.getLogger("gateway.workers")

PEER_TIMEOUT_S = 2.0
PR_SET_PDEATHSIG = 1


class Peers:
    """The :class:`gateway.app.WorkerLink` of worker ``index``: the others' shares, fetched in
    parallel over their sockets; one that does not answer (restarting) is left out."""

    def __init__(self, root: pathlib.Path, index: int) -> None:
        self.index = index
        self._root = root
        self._pool = ThreadPoolExecutor(8, thread_name_prefix="gateway-peers")

    def _fetch(self, index: int, window_s: float) -> StatsShare | None:
        try:
            status, body = channel.get(str(rundir.socket_path(self._root, index)),
                                       f"/share?window_s={window_s!r}", PEER_TIMEOUT_S)
            if status != 200:
                log.warning("worker %d's statistics unavailable: %d %s", index, status, body.strip()[:200],
                            extra={"event": "workers.peer_failed"})
                return None
            return codec.loads(body)
        except OSError as exc:
            log.info("worker %d's statistics unavailable (%s)", index, exc, extra={"event": "workers.peer_failed"})
            return None

    def others(self, window_s: float) -> tuple[list[StatsShare], int, int]:
        state = rundir.read_state(self._root)
        futures = [self._pool.submit(self._fetch, i, window_s) for i in range(state.workers) if i != self.index]
        shares = [s for s in (f.result() for f in futures) if s is not None]
        return shares, 1 + len(shares), sum(state.restarts)

    def _post(self, index: int, target: str, body: bytes) -> bool:
        try:
            status, text = channel.post(str(rundir.socket_path(self._root, index)), target, body, PEER_TIMEOUT_S)
        except OSError as exc:
            log.warning("worker %d did not take %s (%s)", index, target, exc, extra={"event": "workers.peer_failed"})
            return False
        if status != 200:
            log.warning("worker %d refused %s: %d %s", index, target, status, text.strip()[:200],
                        extra={"event": "workers.peer_failed"})
        return status == 200

    def push(self, target: str, payload: dict) -> tuple[int, int]:
        """POST ``payload`` to ``target`` of every other worker: (how many took it, how many others)."""
        state = rundir.read_state(self._root)
        body = json.dumps(payload).encode()
        futures = [self._pool.submit(self._post, i, target, body) for i in range(state.workers) if i != self.index]
        return sum(f.result() for f in futures), len(futures)

    def close(self) -> None:
        self._pool.shutdown(wait=False)


def _die_with_parent() -> None:
    """SIGTERM this process when the supervisor dies (Linux; elsewhere nothing)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return


class _WorkerName(logging.Filter):
    """``gateway.server[w1]``: which worker a log line came from (text and JSON alike)."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self._suffix = f"[w{index}]"

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.endswith(self._suffix):
            record.name += self._suffix
        return True


def _window_s(query: dict[str, str]) -> float:
    try:
        value = float(query.get("window_s", "10"))
    except ValueError:
        raise ValueError(f"window_s: not a number: {query.get('window_s')!r}") from None
    if not 0 < value <= MAX_WINDOW_S or math.isnan(value):
        raise ValueError(f"window_s must be in (0, {MAX_WINDOW_S}], got {value}")
    return value


def endpoint(server: GatewayServer, path: str,
             loop: asyncio.AbstractEventLoop | None = None) -> channel.PrivateEndpoint:
    def metrics(_query):
        return 200, server.export.prometheus_text(), server.export.prometheus_content_type

    def ready(_query):
        ok, why = server.readiness()
        return (200 if ok else 503), (why or ("ready" if ok else "not ready")) + "\n", channel.TEXT

    def share(query):
        return 200, codec.dumps(server.share(_window_s(query))), "application/json"

    def on_loop(fn, *args) -> None:   # run on the server's event loop, wait for it (bounded)
        if loop is None:
            fn(*args)
            return

        async def call():
            fn(*args)
        asyncio.run_coroutine_threadsafe(call(), loop).result(PEER_TIMEOUT_S)

    def traffic(body: bytes):
        try:
            payload = json.loads(body)
        except json.JSONDecodeError:
            raise ValueError("not JSON") from None
        try:
            on_loop(server.traffic.apply_from_peer, payload)
        except GatewayError as exc:
            return 404, exc.message + "\n", channel.TEXT
        return 200, "ok\n", channel.TEXT

    def reload(_body: bytes):
        on_loop(server.request_reload)
        return 200, "ok\n", channel.TEXT

    return channel.PrivateEndpoint(path, {"/metrics": metrics, "/readyz": ready, "/share": share},
                                   {"/traffic": traffic, "/reload": reload})


async def run(root: pathlib.Path, index: int, settings: GatewaySettings) -> int:
    peers = Peers(root, index)
    server = GatewayServer(settings, worker=peers)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, server.request_reload)
    private = endpoint(server, str(rundir.socket_path(root, index)), loop)
    private.start()
    try:
        await server.start()
        await stop.wait()
        log.info("worker %d shutting down: draining in-flight requests (grace %.1f s)", index,
                 settings.grace_period_s, extra={"event": "server.draining"})
        await server.stop()
    finally:
        private.stop()
        peers.close()
    return 0


def main(argv: list[str]) -> int:
    _die_with_parent()
    if len(argv) != 3:
        print("usage: python -m gateway.workers.worker RUNDIR INDEX SUPERVISOR_PID (started by gateway serve "
              "--workers)", file=sys.stderr)
        return 2
    root, index = pathlib.Path(argv[0]), int(argv[1])
    if os.getppid() != int(argv[2]):  # the supervisor died before the death signal was set
        return 1
    token = os.environ.pop(WORKER_TOKEN_ENV, None)   # (the supervisor's admin token; gone from here on)
    settings = GatewaySettings.model_validate_json((root / rundir.SETTINGS).read_text())
    if token:
        settings = settings.model_copy(update={"admin_token": SecretStr(token)})
    logs.configure(settings.log_level, settings.log_format)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_WorkerName(index))
    return asyncio.run(run(root, index, settings))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
