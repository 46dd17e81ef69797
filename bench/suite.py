"""``sweep``, ``rate`` and ``scenario``: loads against one server (a given ``--address``, or a
gateway the command starts on the bench repository, pinned to ``--server-cpus``), each writing
``results.json`` and PNG plots into ``--out`` and printing a one-line JSON summary last.

Scenarios (model ``mlp``, 64 -> 256 -> 10):

- ``steady``: closed loop, ``--concurrency`` in flight, for the window;
- ``spike``: open loop at ``--rate``, ``--spike-factor`` times that for ``--spike-s`` from the
  middle of the window (overload: how far latency climbs and how soon it recovers);
- ``faults``: ``mlp_faults`` (5 % of executions fail, 0.2-2.2 ms extra latency, a static
  fallback), closed loop: the error and degraded shares, the latency of degraded answers;
- ``drift``: closed loop, inputs shifted by ``--shift`` standard deviations from the middle of
  the window; the gateway's drift window is ``--drift-window-s``; when a feature's drift grade
  first read "alert", the first change-detector alarm, and the alerts seen (GetStats /
  ListAlerts, polled every 0.5 s) are marked on the time series.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import pathlib
import tempfile
import threading
import time
from typing import Any, Iterator

import grpc

from bench import plots
from bench.driver import one_line, run_load
from bench.models import write_repository
from bench.run_serving import Server
from bench.servers import gateway

SCENARIOS = ("steady", "spike", "faults", "drift")


def repository(args: argparse.Namespace) -> pathlib.Path:
    return write_repository(pathlib.Path(args.repository).expanduser())


def out_dir(args: argparse.Namespace, name: str) -> pathlib.Path:
    out = pathlib.Path(args.out or tempfile.mkdtemp(prefix=f"bench-{name}-"))
    out.mkdir(parents=True, exist_ok=True)
    return out


@contextlib.contextmanager
def target(args: argparse.Namespace, out: pathlib.Path, env: dict[str, str] | None = None) -> Iterator[tuple[str, int | None]]:
    """(address, server pid or None): the given ``--address``, or a gateway started for the run."""
    if args.address:
        yield args.address, args.server_pid or None
        return
    server: Server = gateway("gateway", repository(args), out, args.server_cpus, env)
    server.start()
    try:
        server.wait_serving(120)
        yield server.address, server.proc.pid if server.proc else None
    finally:
        server.stop()


def load_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return dict(duration_s=args.duration_s, warmup_s=args.warmup_s, processes=args.processes,
                client_cpus=args.client_cpus, timeout_s=args.timeout_s, quiet=args.quiet, batch=args.batch_size)


def _write(out: pathlib.Path, results: Any) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")


def sweep(args: argparse.Namespace) -> dict:
    out = out_dir(args, "sweep")
    results = []
    with target(args, out) as (address, pid):
        for method in args.methods.split(","):
            points = ([("closed", int(c)) for c in args.concurrency.split(",")] if not args.rates else
                      [("open", float(r)) for r in args.rates.split(",")])
            for mode, value in points:
                kw = dict(concurrency=int(value)) if mode == "closed" else dict(rate=value, arrival=args.arrival)
                r = run_load(address=address, method=method, model=args.model, mode=mode, server_pid=pid,
                             label=f"{method} {'c' if mode == 'closed' else ''}{value:g}{'/s' if mode == 'open' else ''}",
                             **kw, **load_kwargs(args))
                r["label"] = method
                results.append(r)
                if "skipped" in r:
                    break
    _write(out, results)
    measured = [r for r in results if "requests" in r]
    if measured and not plots.available():
        plots.throughput_latency(measured, out / "throughput_latency.png")
        plots.latency_cdf(measured, out / "latency_cdf.png")
    return {"command": "sweep", "out": str(out), "points": [_point(r) for r in results],
            **({"plots": plots.available()} if plots.available() else {})}


def _point(r: dict) -> dict:
    keys = ("method", "mode", "concurrency", "rate", "rps", "rows_per_s", "p50_ms", "p90_ms", "p99_ms", "p999_ms",
            "max_ms", "error_share", "degraded_share", "server_cpu_us_per_request", "skipped")
    return {k: r[k] for k in keys if k in r}


def rate(args: argparse.Namespace) -> dict:
    out = out_dir(args, "rate")
    with target(args, out) as (address, pid):
        r = run_load(address=address, method=args.method, model=args.model, mode="open", rate=args.rate,
                     arrival=args.arrival, server_pid=pid, **load_kwargs(args))
    _write(out, r)
    if "requests" in r and not plots.available():
        plots.time_series(r, out / "time_series.png")
        plots.latency_cdf([r], out / "latency_cdf.png")
    return {"command": "rate", "out": str(out), **one_line(r)}


class Monitor:
    """Polls the gateway's GetStats and ListAlerts every 0.5 s: when the first change alarm and
    each alert appeared (unix seconds), and the last drift figures."""

    def __init__(self, address: str, model: str):
        self.address, self.model = address, model
        self.first_alarm_unix: float | None = None
        self.first_drift_alert_unix: float | None = None
        self.alerts: dict[str, float] = {}
        self.drift: dict[str, Any] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Monitor":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        from google.protobuf.json_format import MessageToDict

        from gateway._proto import gateway_pb2 as pb
        from gateway._proto import gateway_pb2_grpc as pb_grpc
        with grpc.insecure_channel(self.address) as channel:
            stub = pb_grpc.GatewayStub(channel)
            while not self._stop.wait(0.5):
                try:
                    stats = stub.GetStats(pb.GetStatsRequest(model=self.model), timeout=2)
                    alerts = stub.ListAlerts(pb.ListAlertsRequest(model=self.model), timeout=2)
                except grpc.RpcError:
                    continue
                for m in stats.models:
                    if m.model == self.model and m.HasField("drift"):
                        if m.drift.change_alarms and self.first_alarm_unix is None:
                            self.first_alarm_unix = time.time()
                        if m.drift.features_alert and self.first_drift_alert_unix is None:
                            self.first_drift_alert_unix = time.time()
                        self.drift = {k: v for k, v in MessageToDict(m.drift).items()
                                      if k in ("reference", "referenceRows", "windowRows", "featuresAlert",
                                               "featuresWarn", "featuresOk", "changeAlarms")}
                for a in alerts.alerts:
                    self.alerts.setdefault(a.rule, a.firing_since_unix_s or time.time())


def scenario(args: argparse.Namespace) -> dict:
    name = args.name
    out = out_dir(args, name)
    half = args.duration_s / 2
    env: dict[str, str] = {}
    model = "mlp"
    kw: dict[str, Any] = dict(mode="closed", concurrency=args.concurrency)
    events: list[tuple[float, str]] = []
    if name == "spike":
        kw = dict(mode="open", rate=args.rate, arrival=args.arrival,
                  spike={"at_s": half, "for_s": args.spike_s, "factor": args.spike_factor})
        events = [(half, f"spike x{args.spike_factor:g}"), (half + args.spike_s, "spike ends")]
    elif name == "faults":
        model = "mlp_faults"
        env = {"GATEWAY_ALLOW_FAULT_INJECTION": "true"}
    elif name == "drift":
        kw.update(drift={"at_s": half, "shift": args.shift}, distinct=2000)
        env = {"GATEWAY_TELEMETRY__DRIFT_WINDOW_S": str(args.drift_window_s)}
        events = [(half, f"drift +{args.shift:g} sd")]
    if args.address and env:
        env_text = " ".join(f"{k}={v}" for k, v in env.items())
        print(f"bench: scenario {name} against --address: the server must run with {env_text}", flush=True)
    monitor = None
    with target(args, out, env) as (address, pid):
        with contextlib.ExitStack() as stack:
            if name == "drift":
                monitor = stack.enter_context(Monitor(address, model))
            r = run_load(address=address, method=args.method, model=model, server_pid=pid,
                         label=f"{name} {args.method}", **kw, **load_kwargs(args))
    r["scenario"] = name
    if monitor is not None and "measure_start_unix" in r:
        t0 = r["measure_start_unix"]
        r["monitoring"] = {"drift": monitor.drift, "alerts_s": {k: round(v - t0, 2) for k, v in monitor.alerts.items()},
                           "first_change_alarm_s": None if monitor.first_alarm_unix is None
                           else round(monitor.first_alarm_unix - t0, 2),
                           "first_drift_alert_s": None if monitor.first_drift_alert_unix is None
                           else round(monitor.first_drift_alert_unix - t0, 2)}
        if monitor.first_alarm_unix is not None:
            events.append((monitor.first_alarm_unix - t0, "first change alarm"))
        if monitor.first_drift_alert_unix is not None:
            events.append((monitor.first_drift_alert_unix - t0, "drift grade: alert"))
        for rule, at in monitor.alerts.items():
            events.append((at - t0, f"alert {rule}"))
    _write(out, r)
    if "requests" in r and not plots.available():
        plots.time_series(r, out / "time_series.png", events)
        plots.latency_cdf([r], out / "latency_cdf.png")
    return {"command": "scenario", "out": str(out), **one_line(r)}
