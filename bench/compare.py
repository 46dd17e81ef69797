"""``compare``: side-by-side ratios from one run, the arms alternating, server CPU per request
beside throughput. Pairs (``--pairs``, any of):

- ``floor``: gateway ``Predict`` / the minimal grpcio server (``bench/floor_server.py``);
- ``mlserver``, ``pytriton``: the gateway / Seldon MLServer 1.7 (onnxruntime runtime in
  ``bench/peers``) and Triton 2.51 through PyTriton 0.7 (``@batch`` onnxruntime callable,
  dynamic batching), both over ``ModelInfer``. The gateway's arm is ``ModelInfer`` when it serves
  ``inference.GRPCInferenceService``, else ``Predict`` (same model, same rows, raw bytes both ways)
  and the result says which;
- ``oip``: gateway ``ModelInfer`` / ``Predict`` and ``ModelStreamInfer`` / ``PredictStream``
  (skipped, saying why, while the gateway has no OIP service);
- ``telemetry``: gateway telemetry on / ``GATEWAY_TELEMETRY__ENABLED=false``;
- ``workers``: ``instance_count`` N / 1 (``--workers N``);
- ``setting``: a gateway with ``--setting GATEWAY_X=V`` (repeatable) / one without, loaded with
  ``--setting-method`` (default ``infer``) on ``mlp``;
- ``--profile``: one more run per arm under ``perf`` (bench/profile.py): where each server's CPU
  goes, by shared object; gateway arms also carry the gateway's own GetStats (queue, compute).
- ``ceiling``: gateway rows/s on the compute-heavy ``heavy_cnn`` (``--ceiling-model``;
  ``--ceiling-concurrency``, 32)
  / raw onnxruntime in one process at the mean batch size the gateway formed in that run
  (``GetStats``), pinned to the server's CPUs.

Every server of a pair is started once and frozen (SIGSTOP) while another runs, unless
``--fresh`` (a new process for every run). For each concurrency, repeat ``r`` runs the arms in
the ``r``-th of their rotations and reverses. Medians over ``--repeats``. Writes
``results.json`` plus a throughput-latency PNG and a CDF PNG per pair into ``--out``.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import grpc

from bench import plots, servers
from bench.driver import one_line, run_load
from bench.models import write_repository
from bench.run_serving import Server, ServerStartError, pinned, cpu_set

PAIRS = ("floor", "mlserver", "pytriton", "oip", "telemetry", "workers", "ceiling", "setting")
TARGETS = {"mlserver": 2.0, "pytriton": 1.5, "oip": 0.9, "ceiling": 0.85}


def log(msg: str) -> None:
    print(f"[bench compare {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class Arm:
    label: str
    make: Callable[[], Server]
    method: str
    model: str = "mlp"
    server: Server | None = None
    runs: dict[int, list[dict]] = field(default_factory=dict)
    profile: dict | None = None
    is_gateway: bool = False


class Servers:
    """Starts arms' servers, keeps one running at a time (the others SIGSTOPped)."""

    def __init__(self) -> None:
        self.live: list[Server] = []
        self.running: Server | None = None

    def launch(self, arm: Arm) -> Server:
        server = arm.make()
        server.start()
        self.live.append(server)
        try:
            server.wait_serving(150)
        except ServerStartError:
            server.stop()
            self.live.remove(server)
            raise
        server.pause()
        arm.server = server
        return server

    def activate(self, server: Server) -> None:
        if self.running is not None and self.running is not server:
            self.running.pause()
        server.resume()
        if not server.alive():
            raise ServerStartError(f"{server.label} has died: {server.log_tail()}")
        server.wait_serving(30)
        self.running = server

    def stop(self, server: Server) -> None:
        server.stop()
        if server in self.live:
            self.live.remove(server)
        if self.running is server:
            self.running = None

    def stop_all(self) -> None:
        for s in list(self.live):
            self.stop(s)


def _orders(n: int) -> list[list[int]]:
    base = list(range(n))
    rot = [base[i:] + base[:i] for i in range(n)]
    return rot + [o[::-1] for o in rot]


def _median(rs: list[dict], key: str) -> float | None:
    xs = [r[key] for r in rs if r.get(key) is not None]
    return round(statistics.median(xs), 3) if xs else None


def run_arms(args: argparse.Namespace, pool: Servers, arms: list[Arm], concurrencies: list[int],
             after_run: Callable[[Arm, dict], None] | None = None) -> None:
    for arm in arms:
        if not args.fresh:
            pool.launch(arm)
    orders = _orders(len(arms))
    for c in concurrencies:
        for r in range(args.repeats):
            for i in orders[r % len(orders)]:
                arm = arms[i]
                if args.fresh:
                    pool.launch(arm)
                assert arm.server is not None and arm.server.proc is not None
                pool.activate(arm.server)
                if args.fresh:  # settle the new process, unmeasured
                    run_load(address=arm.server.address, method=arm.method, model=arm.model, concurrency=c,
                             duration_s=args.warmup_s, warmup_s=0, processes=args.processes,
                             client_cpus=args.client_cpus, quiet=True)
                res = run_load(address=arm.server.address, method=arm.method, model=arm.model, concurrency=c,
                               duration_s=args.duration_s, warmup_s=args.warmup_s, processes=args.processes,
                               client_cpus=args.client_cpus, server_pid=arm.server.proc.pid, quiet=args.quiet,
                               label=f"{arm.label} c{c}")
                res["label"] = arm.label
                if arm.is_gateway and "requests" in res:
                    res["gateway_stats"] = gateway_stats(arm.server.address, arm.model, args.duration_s)
                if after_run is not None:
                    after_run(arm, res)
                if args.fresh:
                    pool.stop(arm.server)
                arm.runs.setdefault(c, []).append(res)
                if "skipped" in res:
                    log(f"c{c} repeat {r + 1}: {arm.label}: skipped: {res['skipped']}")
                else:
                    log(f"c{c} repeat {r + 1}/{args.repeats} {arm.label:<22} {res['rps']:9.1f} req/s "
                        f"p50 {res['p50_ms']:.2f} p99 {res['p99_ms']:.2f} ms  server CPU "
                        f"{res.get('server_cpu_us_per_request', float('nan')):.0f} us/req  errors {res['error_count']}")
    if getattr(args, "profile", False):
        for arm in arms:  # one more run each, under perf, at the first concurrency
            if args.fresh:
                pool.launch(arm)
            assert arm.server is not None and arm.server.proc is not None
            pool.activate(arm.server)
            from bench.profile import Recording
            with Recording(arm.server.proc.pid, 2.0 + 0.3 * args.processes + args.warmup_s + args.duration_s) as rec:
                run_load(address=arm.server.address, method=arm.method, model=arm.model, concurrency=concurrencies[0],
                         duration_s=args.duration_s, warmup_s=args.warmup_s, processes=args.processes,
                         client_cpus=args.client_cpus, quiet=True)
            arm.profile = rec.top()
            log(f"profile {arm.label}: {arm.profile}")
            if args.fresh:
                pool.stop(arm.server)
    for arm in arms:
        if arm.server is not None and not args.fresh:
            pool.stop(arm.server)


def gateway_stats(address: str, model: str, window_s: float) -> dict[str, Any]:
    """Where the gateway's time went over the last window (its own GetStats): end-to-end, queue
    and compute p50/p99 and the mean batch it formed."""
    from gateway._proto import gateway_pb2 as pb
    from gateway._proto import gateway_pb2_grpc as pb_grpc
    try:
        with grpc.insecure_channel(address) as ch:
            stats = pb_grpc.GatewayStub(ch).GetStats(pb.GetStatsRequest(model=model, window_s=window_s), timeout=5)
    except grpc.RpcError as exc:
        return {"error": exc.code().name}
    for m in stats.models:
        if m.model == model:
            return {"latency_p50_ms": round(m.latency.p50_ms, 3), "latency_p99_ms": round(m.latency.p99_ms, 3),
                    "queue_p50_ms": round(m.queue.p50_ms, 3), "queue_p99_ms": round(m.queue.p99_ms, 3),
                    "compute_p50_ms": round(m.compute.p50_ms, 3), "compute_p99_ms": round(m.compute.p99_ms, 3),
                    "mean_batch_size": round(m.mean_batch_size, 2)}
    return {"error": f"no stats for {model}"}


def medians(arm: Arm, c: int) -> dict[str, Any]:
    rs = [r for r in arm.runs.get(c, []) if "requests" in r]
    if not rs:
        skipped = next((r["skipped"] for r in arm.runs.get(c, []) if "skipped" in r), "no runs")
        return {"skipped": skipped}
    keys = ("rps", "rows_per_s", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "server_cpu_us_per_request",
            "error_share", "degraded_share")
    out = {"method": arm.method, **{k: _median(rs, k) for k in keys},
           "runs_rps": [r["rps"] for r in rs], "errors": sum(r["error_count"] for r in rs)}
    inside = [r["gateway_stats"] for r in rs if "error" not in r.get("gateway_stats", {"error": 1})]
    if inside:
        out["gateway_stats"] = {k: _median(inside, k) for k in inside[0]}
    return out


def ratio(a: dict, b: dict, key: str) -> float | None:
    if a.get(key) is None or not b.get(key):
        return None
    return round(a[key] / b[key], 3)


def gateway_arm(repo: pathlib.Path, logdir: pathlib.Path, args: argparse.Namespace, label: str = "gateway",
                env: dict[str, str] | None = None, method: str = "predict", model: str = "mlp",
                repository: pathlib.Path | None = None) -> Arm:
    env = {**dict(kv.split("=", 1) for kv in (args.gateway_env or [])), **(env or {})}
    return Arm(label, lambda: servers.gateway(label, repository or repo, logdir, args.server_cpus, env), method, model,
               is_gateway=True)


def has_oip(address: str) -> str | None:
    """None when the server answers inference.GRPCInferenceService, else why not."""
    from bench.wire import oip_modules
    pb, svc = oip_modules()
    with grpc.insecure_channel(address) as ch:
        try:
            svc.GRPCInferenceServiceStub(ch).ServerLive(pb.ServerLiveRequest(), timeout=5)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                return "server has no inference.GRPCInferenceService"
            return f"ServerLive failed: {exc.code().name}"
    return None


def _pair_result(name: str, arms: list[Arm], concurrencies: list[int], what: str) -> dict[str, Any]:
    """Ratios of arms[0] to each other arm, at each concurrency."""
    out: dict[str, Any] = {"what": what, "by_concurrency": {}}
    for c in concurrencies:
        meds = {arm.label: medians(arm, c) for arm in arms}
        a = meds[arms[0].label]
        row: dict[str, Any] = {"medians": meds, "ratios": {}}
        for other in arms[1:]:
            b = meds[other.label]
            row["ratios"][f"{arms[0].label} / {other.label}"] = {
                "rps": ratio(a, b, "rps"), "rows_per_s": ratio(a, b, "rows_per_s"), "p99": ratio(a, b, "p99_ms"),
                "server_cpu_per_request": ratio(a, b, "server_cpu_us_per_request")}
        out["by_concurrency"][str(c)] = row
    profiles = {arm.label: arm.profile for arm in arms if arm.profile is not None}
    if profiles:
        out["profile"] = {"what": f"perf record on the server's process group, c{concurrencies[0]}: "
                                  "share of samples by shared object", **profiles}
    return out


def _plots(out: pathlib.Path, name: str, arms: list[Arm]) -> None:
    results = [r for arm in arms for rs in arm.runs.values() for r in rs if "requests" in r]
    if not results or plots.available():
        return
    # one point per arm and concurrency: the run with the median throughput
    points = []
    for arm in arms:
        for c, rs in arm.runs.items():
            ok = sorted((r for r in rs if "requests" in r), key=lambda r: r["rps"])
            if ok:
                points.append(ok[len(ok) // 2])
    plots.throughput_latency(points, out / f"{name}_throughput_latency.png")
    plots.latency_cdf(points, out / f"{name}_latency_cdf.png")


def compare(args: argparse.Namespace) -> dict:
    pairs = [p.strip() for p in args.pairs.split(",") if p.strip()]
    unknown = set(pairs) - set(PAIRS)
    if unknown:
        raise SystemExit(f"bench compare: unknown pairs {sorted(unknown)} (choose from {', '.join(PAIRS)})")
    repo = write_repository(pathlib.Path(args.repository).expanduser())
    out = pathlib.Path(args.out or tempfile.mkdtemp(prefix="bench-compare-"))
    out.mkdir(parents=True, exist_ok=True)
    logdir = out / "logs"
    logdir.mkdir(exist_ok=True)
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    summary: dict[str, Any] = {"command": "compare", "date": time.strftime("%Y-%m-%d"), "out": str(out),
                               "server_cpus": args.server_cpus, "client_cpus": args.client_cpus,
                               "duration_s": args.duration_s, "warmup_s": args.warmup_s, "repeats": args.repeats,
                               "processes": args.processes, "fresh": args.fresh,
                               "gateway_env": args.gateway_env or [], "pairs": {}}
    pool = Servers()
    t0 = time.monotonic()
    try:
        # Does this gateway serve the Open Inference Protocol? (decides the gateway's peer arm)
        probe = servers.gateway("gateway-probe", repo, logdir, args.server_cpus,
                                dict(kv.split("=", 1) for kv in (args.gateway_env or [])))
        probe.start()
        try:
            probe.wait_serving(120)
            oip_missing = has_oip(probe.address)
        finally:
            probe.stop()
        summary["gateway_oip"] = oip_missing or "served"
        gw_method = "infer" if oip_missing is None else "predict"

        peer_pairs = [p for p in pairs if p in ("floor", "mlserver", "pytriton")]
        if peer_pairs:
            arms = [gateway_arm(repo, logdir, args, f"gateway-{gw_method}", method=gw_method)]
            if "floor" in peer_pairs:
                if gw_method == "infer":
                    arms.append(gateway_arm(repo, logdir, args, "gateway-predict", method="predict"))
                arms.append(Arm("floor", lambda: servers.floor(repo, logdir, args.server_cpus, "mlp"), "predict"))
            for peer in ("mlserver", "pytriton"):
                if peer not in peer_pairs:
                    continue
                why = servers.peer_available(peer)
                if why:
                    summary["pairs"][peer] = {"skipped": why}
                    continue
                make = (lambda: servers.mlserver(repo, "mlp", logdir, args.server_cpus)) if peer == "mlserver" else \
                    (lambda: servers.pytriton(repo, "mlp", logdir, args.server_cpus))
                arms.append(Arm(peer, make, "infer"))
            run_arms(args, pool, arms, concurrencies)
            res = _pair_result("peers", arms, concurrencies,
                               f"mlp 64-256-10, batch 1: gateway {'ModelInfer' if gw_method == 'infer' else 'Predict'}"
                               " against each; peers over ModelInfer, the floor over Predict")
            res["gateway_method"] = gw_method
            if gw_method != "infer":
                res["note"] = f"gateway ModelInfer: {oip_missing}; the gateway arm is Predict"
            for c, row in res["by_concurrency"].items():
                for peer, target in (("mlserver", TARGETS["mlserver"]), ("pytriton", TARGETS["pytriton"])):
                    r = row["ratios"].get(f"{arms[0].label} / {peer}")
                    if r and r["rps"] is not None:
                        row.setdefault("targets", {})[peer] = {
                            "rps_target": target, "rps_met": r["rps"] >= target,
                            "lower_p99": r["p99"] is not None and r["p99"] < 1.0}
            summary["pairs"]["peers"] = res
            _plots(out, "peers", arms)

        if "oip" in pairs:
            if oip_missing:
                summary["pairs"]["oip"] = {"skipped": f"gateway ModelInfer / ModelStreamInfer: {oip_missing}"}
            else:
                arms = [gateway_arm(repo, logdir, args, f"gateway-{m}", method=m) for m in ("infer", "predict")]
                sarms = [gateway_arm(repo, logdir, args, f"gateway-{m}", method=m) for m in ("stream_infer", "stream")]
                run_arms(args, pool, arms, concurrencies)
                run_arms(args, pool, sarms, concurrencies)
                res = {"unary": _pair_result("oip", arms, concurrencies, "ModelInfer / Predict"),
                       "stream": _pair_result("oip", sarms, concurrencies, "ModelStreamInfer / PredictStream"),
                       "target": TARGETS["oip"]}
                for kind in ("unary", "stream"):
                    for row in res[kind]["by_concurrency"].values():
                        (r,) = row["ratios"].values()
                        row["met"] = r["rps"] is not None and r["rps"] >= TARGETS["oip"]
                summary["pairs"]["oip"] = res
                _plots(out, "oip", arms + sarms)

        if "telemetry" in pairs:
            arms = [gateway_arm(repo, logdir, args, "telemetry_on"),
                    gateway_arm(repo, logdir, args, "telemetry_off", env={"GATEWAY_TELEMETRY__ENABLED": "false"})]
            run_arms(args, pool, arms, concurrencies[:1])
            summary["pairs"]["telemetry"] = _pair_result("telemetry", arms, concurrencies[:1],
                                                         "mlp batch 1: telemetry on / off")

        if "setting" in pairs:
            if not args.setting:
                raise SystemExit("bench compare: the setting pair needs --setting GATEWAY_...=VALUE")
            env = dict(kv.split("=", 1) for kv in args.setting)
            label = ",".join(args.setting)
            arms = [gateway_arm(repo, logdir, args, "with_setting", method=args.setting_method, env=env),
                    gateway_arm(repo, logdir, args, "without", method=args.setting_method)]
            run_arms(args, pool, arms, concurrencies)
            summary["pairs"]["setting"] = _pair_result("setting", arms, concurrencies,
                                                       f"mlp batch 1, {args.setting_method}: {label} / without")

        if "workers" in pairs:
            repo_n = write_repository(out / f"repository-instances-{args.workers}", instance_count=args.workers)
            arms = [gateway_arm(repo, logdir, args, f"instances_{args.workers}", repository=repo_n),
                    gateway_arm(repo, logdir, args, "instances_1")]
            run_arms(args, pool, arms, concurrencies)
            summary["pairs"]["workers"] = _pair_result("workers", arms, concurrencies,
                                                       f"mlp batch 1: instance_count {args.workers} / 1")

        if "ceiling" in pairs:
            summary["pairs"]["ceiling"] = ceiling(args, pool, repo, logdir)
    finally:
        pool.stop_all()
    summary["elapsed_s"] = round(time.monotonic() - t0, 1)
    (out / "results.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def ceiling(args: argparse.Namespace, pool: Servers, repo: pathlib.Path, logdir: pathlib.Path) -> dict:
    """Gateway rows/s on the ceiling model against raw onnxruntime at the batch sizes it formed, alternating."""
    from gateway._proto import gateway_pb2 as pb
    from gateway._proto import gateway_pb2_grpc as pb_grpc

    c = args.ceiling_concurrency
    arm = gateway_arm(repo, logdir, args, "gateway", model=args.ceiling_model)
    server = pool.launch(arm)
    runs = []
    try:
        for r in range(args.repeats):
            pool.activate(server)
            assert server.proc is not None
            res = run_load(address=server.address, method="predict", model=args.ceiling_model, concurrency=c,
                           duration_s=args.duration_s, warmup_s=args.warmup_s, processes=args.processes,
                           client_cpus=args.client_cpus, server_pid=server.proc.pid, quiet=args.quiet,
                           label=f"gateway {args.ceiling_model} c{c}")
            with grpc.insecure_channel(server.address) as ch:
                stats = pb_grpc.GatewayStub(ch).GetStats(
                    pb.GetStatsRequest(model=args.ceiling_model, window_s=args.duration_s), timeout=5)
            mean_batch = max((m.mean_batch_size for m in stats.models if m.model == args.ceiling_model), default=0.0)
            inside = gateway_stats(server.address, args.ceiling_model, args.duration_s)
            server.pause()
            argv = pinned([sys.executable, "-m", "bench.ceiling", "--model-path",
                           str(repo / args.ceiling_model / "1" / "model.onnx"), "--mean-batch", str(max(1.0, mean_batch)),
                           "--seconds", str(min(args.duration_s, 5.0))], cpu_set(args.server_cpus))
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                                  cwd=str(pathlib.Path(__file__).resolve().parents[1]))
            if proc.returncode != 0:
                raise RuntimeError(f"bench.ceiling failed: {proc.stderr[-800:]}")
            raw = json.loads(proc.stdout.strip().splitlines()[-1])
            row = {"gateway_rows_per_s": res["rows_per_s"], "gateway_p99_ms": res["p99_ms"],
                   "gateway_server_cpu_us_per_request": res.get("server_cpu_us_per_request"),
                   "mean_batch_formed": round(mean_batch, 2), "raw_rows_per_s": raw["rows_per_s"],
                   "raw_cpu_us_per_row": raw["cpu_us_per_row"],
                   "ratio": round(res["rows_per_s"] / raw["rows_per_s"], 3) if raw["rows_per_s"] else None,
                   # rows per CPU-second, gateway / raw: the same comparison with the CPU each got
                   "cpu_ratio": round(raw["cpu_us_per_row"] / res["server_cpu_us_per_request"], 3)
                   if res.get("server_cpu_us_per_request") else None,
                   "gateway_stats": inside}
            runs.append(row)
            log(f"ceiling repeat {r + 1}/{args.repeats}: gateway {row['gateway_rows_per_s']:.0f} rows/s at mean batch "
                f"{row['mean_batch_formed']}, raw onnxruntime {row['raw_rows_per_s']:.0f} rows/s: {row['ratio']}")
    finally:
        pool.stop(server)
    ratios = [r["ratio"] for r in runs if r["ratio"] is not None]
    med = round(statistics.median(ratios), 3) if ratios else None
    cpu_ratios = [r["cpu_ratio"] for r in runs if r["cpu_ratio"] is not None]
    profile = None
    if getattr(args, "profile", False):
        from bench.profile import Recording
        server = pool.launch(gateway_arm(repo, logdir, args, "gateway-profiled", model=args.ceiling_model))
        try:
            pool.activate(server)
            assert server.proc is not None
            with Recording(server.proc.pid, 2.0 + 0.3 * args.processes + args.warmup_s + args.duration_s) as rec:
                run_load(address=server.address, method="predict", model=args.ceiling_model, concurrency=c,
                         duration_s=args.duration_s, warmup_s=args.warmup_s, processes=args.processes,
                         client_cpus=args.client_cpus, quiet=True)
            profile = rec.top(12)
        finally:
            pool.stop(server)
    return {"what": f"{args.ceiling_model} batch-1 requests, c{c}: gateway rows/s / raw onnxruntime in-process rows/s at the "
                    f"mean batch the gateway formed (GetStats), one intra-op thread, server CPUs",
            "runs": runs, "ratio": med, "target": TARGETS["ceiling"],
            "met": med is not None and med >= TARGETS["ceiling"],
            "cpu_ratio": round(statistics.median(cpu_ratios), 3) if cpu_ratios else None,
            **({"profile": profile} if profile is not None else {})}


def one_line_summary(summary: dict) -> dict:
    """Ratios and targets only, for the last stdout line."""
    out: dict[str, Any] = {"command": "compare", "out": summary["out"], "gateway_oip": summary.get("gateway_oip")}
    for name, res in summary["pairs"].items():
        if "skipped" in res:
            out[name] = {"skipped": res["skipped"]}
        elif name == "ceiling":
            out[name] = {"ratio": res["ratio"], "met": res["met"], "cpu_ratio": res["cpu_ratio"]}
        elif name == "oip":
            out[name] = {k: {c: {**row["ratios"], "met": row["met"]} for c, row in res[k]["by_concurrency"].items()}
                         for k in ("unary", "stream")}
        else:
            out[name] = {c: {"ratios": row["ratios"], **({"targets": row["targets"]} if "targets" in row else {})}
                         for c, row in res["by_concurrency"].items()}
    return out


__all__ = ["compare", "one_line", "one_line_summary"]
