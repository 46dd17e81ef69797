"""OpenTelemetry export cost: gateway throughput and p99 with OTLP export to a live collector
(every 1 s) vs telemetry off, and with the collector killed mid-run.

    python bench/telemetry_export.py [--duration-s 6] [--warmup-s 2] [--repeats 2] [--concurrency 16]

Arms (a fresh gateway process per run; arms alternate across repeats):

  off     GATEWAY_TELEMETRY__ENABLED=false, no OTLP endpoint
  live    OTEL_EXPORTER_OTLP_ENDPOINT=<rotel-agent on loopback>, OTEL_METRIC_EXPORT_INTERVAL=1000,
          default sampler (parentbased_traceidratio 0.01)
  killed  as live, the collector is SIGKILLed a third of the way into the measured window

Targets: live/off throughput >= 0.97; killed within noise of live (throughput and p99).
The collector runs with the blackhole exporter (no debug log: its printing would take CPU
from the gateway on a 2-core machine). The last stdout line is a one-line JSON summary.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile
import threading
import time

BENCH = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from run_serving import Server, free_port, log  # noqa: E402


def rotel_agent() -> pathlib.Path:
    import rotel

    return pathlib.Path(rotel.__file__).parent / "rotel-agent"


class Collector:
    def __init__(self, logdir: pathlib.Path):
        self.port = free_port()
        self.logdir = logdir
        self.proc = None

    def start(self) -> None:
        out = open(self.logdir / "rotel.log", "ab")
        self.proc = subprocess.Popen([str(rotel_agent()), "start", "--otlp-grpc-endpoint", f"127.0.0.1:{self.port}",
                                      "--otlp-http-endpoint", f"127.0.0.1:{free_port()}",
                                      "--exporter", "blackhole"], stdout=out, stderr=subprocess.STDOUT)
        out.close()
        time.sleep(0.5)
        if self.proc.poll() is not None:
            raise RuntimeError("rotel-agent exited at start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def run_load(address: str, args) -> dict:
    out = subprocess.run([sys.executable, str(BENCH / "load.py"), "--address", address, "--model", "classifier",
                          "--concurrency", str(args.concurrency), "--duration-s", str(args.duration_s),
                          "--warmup-s", str(args.warmup_s), "--quiet"],
                         capture_output=True, text=True, timeout=args.duration_s + args.warmup_s + 60)
    return json.loads(out.stdout.strip().splitlines()[-1])


def one_run(arm: str, args, repo: pathlib.Path, logdir: pathlib.Path) -> dict:
    env = {"GATEWAY_GRACE_PERIOD_S": "1", "GATEWAY_ADMIN_PORT": "0"}
    collector = None
    if arm == "off":
        env["GATEWAY_TELEMETRY__ENABLED"] = "false"
    else:
        collector = Collector(logdir)
        collector.start()
        env.update(OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{collector.port}",
                   OTEL_METRIC_EXPORT_INTERVAL="1000")
    argv = [sys.executable, "-m", "gateway", "serve", "--port", "{port}", "--model-repository", str(repo)]
    server = Server(f"gateway-{arm}", argv, env, logdir)
    server.start()
    killer = None
    try:
        server.wait_serving()
        if arm == "killed":
            killer = threading.Timer(args.warmup_s + args.duration_s / 3, collector.kill)
            killer.start()
        result = run_load(server.address, args)
    finally:
        if killer is not None:
            killer.cancel()
        t = time.monotonic()
        server.stop()
        result_stop_s = time.monotonic() - t
        if collector is not None:
            collector.kill()
    result["stop_s"] = round(result_stop_s, 2)
    log(f"{arm:6s} rps={result['rps']:.0f} p50={result['p50_ms']:.2f} ms p99={result['p99_ms']:.2f} ms "
        f"errors={result['error_count']} stop={result['stop_s']} s")
    return result


def sampler_cost_ns(n: int = 200_000) -> dict:
    """Per-request tracing cost on the request path at the default sampler (1 %): the head
    decision for a request without / with a client traceparent (unsampled parent)."""
    import timeit

    from gateway.adapters.tracing import HeadSampler

    s = HeadSampler("parentbased_traceidratio", 0.01)
    plain = (("user-agent", "grpc-python/1.x"),)
    parent = plain + (("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"),)
    return {"no_parent_ns": round(min(timeit.repeat(lambda: s.start(plain), number=n, repeat=3)) / n * 1e9),
            "unsampled_parent_ns": round(min(timeit.repeat(lambda: s.start(parent), number=n,
                                                           repeat=3)) / n * 1e9)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration-s", type=float, default=6.0)
    p.add_argument("--warmup-s", type=float, default=2.0)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--concurrency", type=int, default=16)
    args = p.parse_args(argv)
    logdir = pathlib.Path(tempfile.mkdtemp(prefix="bench-otel-"))
    from gateway.demo import write_demo_repository

    repo = write_demo_repository(logdir / "models")
    arms = ["off", "live", "killed"]
    runs: dict[str, list[dict]] = {a: [] for a in arms}
    for r in range(args.repeats):
        for arm in (arms if r % 2 == 0 else arms[::-1]):
            runs[arm].append(one_run(arm, args, repo, logdir))
    med = {a: {"rps": statistics.median(x["rps"] for x in runs[a]),
               "p99_ms": statistics.median(x["p99_ms"] for x in runs[a]),
               "errors": sum(x["error_count"] for x in runs[a]),
               "max_stop_s": max(x["stop_s"] for x in runs[a])} for a in arms}
    spread = {a: (max(x["rps"] for x in runs[a]) - min(x["rps"] for x in runs[a])) / med[a]["rps"]
              for a in arms}
    summary = {
        "bench": "telemetry_export", "concurrency": args.concurrency, "duration_s": args.duration_s,
        "repeats": args.repeats, "medians": med,
        "rps_spread": {a: round(v, 3) for a, v in spread.items()},
        "live_over_off_rps": round(med["live"]["rps"] / med["off"]["rps"], 3),
        "killed_over_live_rps": round(med["killed"]["rps"] / med["live"]["rps"], 3),
        "killed_over_live_p99": round(med["killed"]["p99_ms"] / med["live"]["p99_ms"], 3),
        "target_live_over_off": 0.97,
        "sampler_cost": sampler_cost_ns(),
        "runs": runs,
    }
    log(f"live/off rps {summary['live_over_off_rps']}  killed/live rps {summary['killed_over_live_rps']}  "
        f"killed/live p99 {summary['killed_over_live_p99']}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
