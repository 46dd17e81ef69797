"""End-to-end serving benchmark: real server processes on loopback, ``bench/load.py`` as the client.

    python bench/run_serving.py [--duration-s 8] [--warmup-s 2] [--repeats 3] [--scenarios a,b,c,d]

Scenarios (each a ratio of two medians over ``--repeats`` runs):

  a. classifier, batch 1, concurrency 16: gateway ``Predict`` req/s vs the floor
     (``bench/floor_server.py``)                                         target >= 0.9
  b. wide_mlp, batch 1, concurrency 32: gateway rows/s with dynamic batching vs
     ``GATEWAY_BATCHING=false``                                          target >= 3
  c. classifier, concurrency 16: gateway ``PredictStream`` vs ``Predict`` req/s (no target)
  d. classifier, concurrency 16: gateway telemetry on vs ``GATEWAY_TELEMETRY__ENABLED=false``
     req/s (no target; 1 - ratio is the telemetry's cost). Skipped, with the reason, when the
     gateway can't start with telemetry enabled.

How it keeps the comparison fair on a small noisy machine:

- every server is a separate process started once (ephemeral loopback port, ready when
  ``grpc.health.v1`` says SERVING) and loads the same model files (the gateway's demo repository);
- only the server under test runs: the others are frozen with SIGSTOP and resumed with SIGCONT
  (then health-checked again) just before their turn, so idle timers and threads take no CPU;
- the arms of a scenario alternate A B / B A / A B ... across repeats, and the load generator is a
  fresh process for every run, with its own warm-up;
- the gateway runs with its defaults (telemetry on when it can start with it) except the one switch
  a scenario flips.

Everything started is killed at the end, on error and on Ctrl-C too. Progress goes to stderr; the
last stdout line is a one-line JSON summary with every run, the medians and the ratios.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

BENCH = pathlib.Path(__file__).resolve().parent
TARGETS = {"a": 0.9, "b": 3.0, "d": 0.97}


def log(msg: str) -> None:
    print(f"[run_serving {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerStartError(RuntimeError):
    pass


def cpu_set(text: str | None) -> set[int] | None:
    """``"0"`` or ``"0,2-3"`` as a set of CPU numbers (None or empty: not pinned)."""
    if not text:
        return None
    cpus: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def pinned(argv: list[str], cpus: set[int] | None) -> list[str]:
    """``argv`` run through ``taskset`` so the process (and every thread it starts) runs on
    ``cpus``. (Not a ``preexec_fn``: that makes subprocess fork instead of spawn, and a fork of
    this process, whose gRPC channels have threads, hung in the child once.)"""
    if cpus is None:
        return argv
    return ["taskset", "-c", ",".join(str(c) for c in sorted(cpus)), *argv]


class Server:
    """One server process in its own process group; log in ``logdir``."""

    def __init__(self, label: str, argv: list[str], env: dict[str, str], logdir: pathlib.Path,
                 cpus: set[int] | None = None):
        self.label = label
        self.cpus = cpus  # pinned to these CPUs (None: wherever the scheduler puts it)
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.argv = [a.replace("{port}", str(self.port)) for a in argv]
        self.env = {**os.environ, **env}
        self.extra_env = env
        self.log_path = logdir / f"{label}.log"
        self.proc: subprocess.Popen | None = None
        self.paused = False

    def start(self) -> None:
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(pinned(self.argv, self.cpus), env=self.env, stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def log_tail(self, lines: int = 6) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])

    def wait_serving(self, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise ServerStartError(f"{self.label} exited with code {self.proc.returncode}: "
                                           f"{self.log_tail()}")
                try:
                    status = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0).status
                    if status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.2)
        raise ServerStartError(f"{self.label} not SERVING after {timeout_s:.0f} s: {self.log_tail()}")

    def _signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self._signal(signal.SIGCONT)
        self.paused = False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None:
            return
        self._signal(signal.SIGCONT)
        self._signal(signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
        self._log.close()


class Bench:
    def __init__(self, args: argparse.Namespace, logdir: pathlib.Path, repository: pathlib.Path):
        self.args = args
        self.logdir = logdir
        self.repository = repository
        self.servers: dict[str, Server] = {}
        self.running: Server | None = None

    # -- servers --------------------------------------------------------------------------
    def gateway(self, label: str, env: dict[str, str], repository: pathlib.Path | None = None) -> Server:
        argv = [sys.executable, "-m", "gateway", "serve", "--port", "{port}",
                "--model-repository", str(repository or self.repository)]
        # Shorter drain at shutdown; nothing else differs from the defaults.
        return Server(label, argv, {"GATEWAY_GRACE_PERIOD_S": "1", **env}, self.logdir,
                      cpu_set(getattr(self.args, "server_cpus", None)))

    def floor(self) -> Server:
        argv = [sys.executable, str(BENCH / "floor_server.py"), "--port", "{port}",
                "--model-repository", str(self.repository), "--models", "classifier,wide_mlp",
                "--mode", self.args.floor_mode]
        return Server(f"floor-{self.args.floor_mode}", argv, {}, self.logdir)

    def launch(self, server: Server) -> Server:
        """Start, wait for SERVING, then freeze until its turn."""
        self.servers[server.label] = server
        server.start()
        try:
            server.wait_serving()
        except ServerStartError:
            server.stop()
            del self.servers[server.label]
            raise
        server.pause()
        log(f"{server.label} SERVING on {server.address} (pid {server.proc.pid}); frozen until its turn")
        return server

    def activate(self, server: Server) -> None:
        if self.running is not None and self.running is not server:
            self.running.pause()
        server.resume()
        if not server.alive():
            raise ServerStartError(f"{server.label} has died: {server.log_tail()}")
        server.wait_serving(30)
        self.running = server

    def stop_all(self) -> None:
        for server in self.servers.values():
            server.stop()
        self.running = None

    # -- load -----------------------------------------------------------------------------
    def load(self, server: Server, model: str, concurrency: int, method: str = "predict") -> dict:
        self.activate(server)
        a = self.args
        argv = [sys.executable, str(BENCH / "load.py"), "--address", server.address, "--model", model,
                "--concurrency", str(concurrency), "--batch-size", "1", "--duration-s", str(a.duration_s),
                "--warmup-s", str(a.warmup_s), "--method", method, "--quiet", "--server-pid", str(server.proc.pid)]
        proc = subprocess.run(pinned(argv, cpu_set(getattr(a, "client_cpus", None))), capture_output=True,
                              text=True, timeout=a.duration_s + a.warmup_s + 60)
        if proc.returncode != 0 or not proc.stdout.strip():
            raise RuntimeError(f"load.py failed (rc {proc.returncode}): {proc.stderr.strip()[-800:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        if not server.alive():
            raise RuntimeError(f"{server.label} died during the run: {server.log_tail()}")
        return result

    def fresh_runs(self, arms: dict[str, tuple[dict[str, str], pathlib.Path | None]], load_args: dict,
                   repeats: int, settle_s: float) -> dict[str, list[dict]]:
        """Each repeat runs every arm (label -> (env, repository)) once, in the next of the
        arms' rotations and their reverses (each arm in each place equally often), each run in a
        fresh gateway process after ``settle_s`` of unmeasured load on it: two like processes
        here differ by up to 12 % for as long as they live, more than the effects measured."""
        labels = list(arms)
        orders = [labels[i:] + labels[:i] for i in range(len(labels))]
        orders += [o[::-1] for o in orders]
        runs: dict[str, list[dict]] = {k: [] for k in labels}
        a = self.args
        try:
            for r in range(repeats):
                for label in orders[r % len(orders)]:
                    env, repository = arms[label]
                    server = self.launch(self.gateway(f"gateway-{label}-{r + 1}", env, repository))
                    measured_s, a.duration_s = a.duration_s, settle_s
                    try:
                        self.load(server, **load_args)   # unmeasured
                    finally:
                        a.duration_s = measured_s
                    res = self.load(server, **load_args)
                    server.stop()
                    del self.servers[server.label]
                    runs[label].append(res)
                    log(f"repeat {r + 1}/{repeats} {label:<10} {res['rps']:8.1f} req/s  p99 {res['p99_ms']:.2f} ms  "
                        f"server CPU {res.get('server_cpu_us_per_request', float('nan')):.0f} us/req  "
                        f"errors {res['error_count']}")
        finally:
            self.stop_all()
        return runs

    def compare(self, name: str, metric: str, arms: list[tuple[str, Server, dict]]) -> dict:
        """Run the two arms alternately (AB, BA, AB, ...) and take medians of ``metric``."""
        runs: dict[str, list[dict]] = {label: [] for label, _, _ in arms}
        for r in range(self.args.repeats):
            order = arms if r % 2 == 0 else list(reversed(arms))
            for label, server, load_args in order:
                res = self.load(server, **load_args)
                runs[label].append(res)
                errs = f"  errors {res['errors']}" if res["error_count"] else ""
                log(f"{name} repeat {r + 1}/{self.args.repeats} {label:<14} {res['rps']:9.1f} req/s "
                    f"{res['rows_per_s']:9.1f} rows/s  p50 {res['p50_ms']:.2f}  p99 {res['p99_ms']:.2f} ms  "
                    f"server CPU {res.get('server_cpu_us_per_request', float('nan')):.0f} us/req{errs}")
        medians = {label: statistics.median(x[metric] for x in rs) for label, rs in runs.items()}
        p50 = {label: statistics.median(x["p50_ms"] for x in rs) for label, rs in runs.items()}
        p99 = {label: statistics.median(x["p99_ms"] for x in rs) for label, rs in runs.items()}
        cpu = {label: statistics.median(x.get("server_cpu_us_per_request", float("nan")) for x in rs)
               for label, rs in runs.items()}
        (la, _, _), (lb, _, _) = arms
        ratio = medians[la] / medians[lb] if medians[lb] else float("nan")
        return {"metric": metric, "ratio": round(ratio, 3), "ratio_of": f"{la} / {lb}",
                "median": {k: round(v, 1) for k, v in medians.items()},
                "median_p50_ms": p50, "median_p99_ms": p99,
                "median_server_cpu_us_per_request": cpu,
                "server_cpu_ratio": round(cpu[la] / cpu[lb], 3) if cpu[lb] else float("nan"),
                "runs": {label: [x[metric] for x in rs] for label, rs in runs.items()},
                "errors": {label: sum(x["error_count"] for x in rs) for label, rs in runs.items()}}


def run(args: argparse.Namespace) -> dict:
    from gateway.demo import demo_repository

    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(scenarios) - set("abcd")
    if unknown:
        raise SystemExit(f"run_serving: unknown scenarios {sorted(unknown)} (choose from a,b,c,d)")
    repository = demo_repository()
    logdir = pathlib.Path(tempfile.mkdtemp(prefix="run_serving-"))
    bench = Bench(args, logdir, repository)
    summary: dict = {"date": time.strftime("%Y-%m-%d"), "nproc": os.cpu_count(),
                     "duration_s": args.duration_s, "warmup_s": args.warmup_s, "repeats": args.repeats,
                     "floor_mode": args.floor_mode, "server_logs": str(logdir), "scenarios": {}}
    t0 = time.monotonic()
    try:
        # The gateway as deployed: its defaults, telemetry included. If it can't start that way
        # (telemetry not built yet), a-c run with telemetry off and d is skipped, saying why.
        telemetry_error = None
        try:
            gw = bench.launch(bench.gateway("gateway", {}))
            summary["gateway_telemetry"] = "on (default)"
        except ServerStartError as exc:
            telemetry_error = str(exc)
            log(f"gateway can't start with telemetry on: {telemetry_error}")
            gw = bench.launch(bench.gateway("gateway", {"GATEWAY_TELEMETRY__ENABLED": "false"}))
            summary["gateway_telemetry"] = f"off: the gateway fails to start with it on ({telemetry_error})"
        base_env = gw.extra_env.copy()
        base_env.pop("GATEWAY_GRACE_PERIOD_S", None)
        out = summary["scenarios"]

        if "a" in scenarios:
            floor = bench.launch(bench.floor())
            load = dict(model="classifier", concurrency=16)
            res = bench.compare("a", "rps", [("gateway", gw, load), ("floor", floor, load)])
            res.update(target=TARGETS["a"], met=res["ratio"] >= TARGETS["a"],
                       what="classifier batch-1 c16: gateway Predict req/s / floor req/s")
            out["a"] = res
        if "b" in scenarios:
            nobatch = bench.launch(bench.gateway("gateway-nobatch", {**base_env, "GATEWAY_BATCHING": "false"}))
            load = dict(model="wide_mlp", concurrency=32)
            res = bench.compare("b", "rows_per_s", [("batching", gw, load), ("no_batching", nobatch, load)])
            res.update(target=TARGETS["b"], met=res["ratio"] >= TARGETS["b"],
                       what="wide_mlp batch-1 c32: rows/s with batching / GATEWAY_BATCHING=false")
            out["b"] = res
        if "c" in scenarios:
            res = bench.compare("c", "rps", [
                ("stream", gw, dict(model="classifier", concurrency=16, method="stream")),
                ("predict", gw, dict(model="classifier", concurrency=16, method="predict"))])
            res.update(target=None, what="classifier batch-1 c16: PredictStream req/s / Predict req/s "
                                         "(16 streams x 1 outstanding vs 16 unary workers)")
            out["c"] = res
        if "d" in scenarios:
            if telemetry_error is not None:
                out["d"] = {"skipped": True, "reason": f"gateway fails to start with telemetry enabled: "
                                                       f"{telemetry_error}"}
            else:
                # Two fresh processes: comparing the gateway that already served a-c with a new one
                # measured the first process's history (heap, GC generations), not telemetry.
                tel = bench.launch(bench.gateway("gateway-telemetry", {}))
                notel = bench.launch(bench.gateway("gateway-notelemetry", {"GATEWAY_TELEMETRY__ENABLED": "false"}))
                load = dict(model="classifier", concurrency=16)
                bench.load(tel, **load)  # one warm-up run each, outside the comparison
                bench.load(notel, **load)
                res = bench.compare("d", "rps", [("telemetry_on", tel, load), ("telemetry_off", notel, load)])
                res.update(target=TARGETS["d"], met=res["ratio"] >= TARGETS["d"],
                           what="classifier batch-1 c16: req/s telemetry on / off (fresh processes)")
                out["d"] = res
    finally:
        bench.stop_all()
    summary["ratios"] = {k: v.get("ratio") for k, v in summary["scenarios"].items()}
    summary["targets_met"] = {k: v["met"] for k, v in summary["scenarios"].items() if "met" in v}
    summary["elapsed_s"] = round(time.monotonic() - t0, 1)
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Gateway vs floor, batching, streaming and telemetry cost, "
                                            "measured on loopback with real processes.")
    p.add_argument("--duration-s", type=float, default=8.0, help="measured seconds per run")
    p.add_argument("--warmup-s", type=float, default=2.0, help="unmeasured seconds before each run")
    p.add_argument("--repeats", type=int, default=3, help="runs per arm (alternating arms)")
    p.add_argument("--scenarios", default="a,b,c,d")
    p.add_argument("--floor-mode", choices=("sync", "aio"), default="sync",
                   help="floor_server implementation (sync is the faster one; see its docstring)")
    p.add_argument("--json-out", help="also write the summary (indented) to this file")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.duration_s <= 0:
        raise SystemExit("run_serving: --repeats >= 1 and --duration-s > 0")
    # SIGTERM -> KeyboardInterrupt-like exit through the finally that stops the servers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    summary = run(args)
    for key, res in summary["scenarios"].items():
        if res.get("skipped"):
            log(f"{key}: skipped: {res['reason']}")
            continue
        verdict = "" if res.get("target") is None else \
            f"  target >= {res['target']}: {'MET' if res['met'] else 'NOT MET'}"
        log(f"{key}: {res['what']}: {res['ratio']:.3f}  medians {res['median']}{verdict}")
    if args.json_out:
        pathlib.Path(args.json_out).write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
