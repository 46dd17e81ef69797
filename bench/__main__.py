"""``python -m bench``: the load suite.

    python -m bench sweep    --concurrency 1,4,16,64 --methods predict,stream     # closed loop
    python -m bench sweep    --rates 200,500,1000 --arrival poisson                 # open loop
    python -m bench rate     --rate 800 --arrival poisson --method predict
    python -m bench scenario steady|spike|faults|drift
    python -m bench compare  --pairs floor,mlserver,pytriton,telemetry,ceiling --concurrency 16,64

Without ``--address`` a command starts its own gateway on the bench repository (``mlp``,
``mlp_faults``, ``heavy_cnn``, ``wide_mlp``; bench/models.py). Loopback only; every run is bounded by its
duration (at most 600 s) and the client's deadlines. Clients are ``--processes`` processes
(pinned to ``--client-cpus``), percentiles within 0.5 % (bench/histogram.py). Each command writes
``results.json`` and PNG plots into ``--out`` and prints a one-line JSON summary last.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys

from bench.wire import METHODS

DEFAULT_REPOSITORY = "~/.cache/onnx-inference-gateway/bench-repository"


def _common(p: argparse.ArgumentParser, *, target: bool = True) -> None:
    if target:
        p.add_argument("--address", help="load this server (loopback) instead of starting a gateway")
        p.add_argument("--server-pid", type=int, default=0, help="with --address: report this process group's CPU")
    p.add_argument("--repository", default=DEFAULT_REPOSITORY, help="where the bench models are written")
    p.add_argument("--duration-s", type=float, default=8.0, help="measured seconds per run")
    p.add_argument("--warmup-s", type=float, default=2.0)
    p.add_argument("--processes", type=int, default=2, help="client processes")
    p.add_argument("--client-cpus", default=None, help="taskset CPU list for the clients, e.g. 1")
    p.add_argument("--server-cpus", default=None, help="taskset CPU list for the servers started, e.g. 0")
    p.add_argument("--batch-size", type=int, default=1, help="rows per request")
    p.add_argument("--timeout-s", type=float, default=10.0, help="per-request deadline")
    p.add_argument("--out", help="directory for results.json and plots (default: a new temp dir)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("sweep", help="a throughput-latency curve: several concurrencies or rates")
    _common(p)
    p.add_argument("--model", default="mlp")
    p.add_argument("--methods", default="predict", help=f"comma-separated, from {', '.join(METHODS)}")
    p.add_argument("--concurrency", default="1,4,16,64", help="closed loop: requests in flight, comma-separated")
    p.add_argument("--rates", default="", help="open loop instead: requests/s, comma-separated")
    p.add_argument("--arrival", choices=("constant", "poisson"), default="constant")

    p = sub.add_parser("rate", help="one open-loop run at a constant or Poisson rate")
    _common(p)
    p.add_argument("--model", default="mlp")
    p.add_argument("--method", choices=METHODS, default="predict")
    p.add_argument("--rate", type=float, default=500.0, help="requests/s")
    p.add_argument("--arrival", choices=("constant", "poisson"), default="poisson")

    p = sub.add_parser("scenario", help="steady, overload spike, injected faults, drift injection")
    _common(p)
    p.add_argument("name", choices=("steady", "spike", "faults", "drift"))
    p.add_argument("--method", choices=METHODS, default="predict")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--rate", type=float, default=500.0, help="spike: the base rate, requests/s")
    p.add_argument("--arrival", choices=("constant", "poisson"), default="poisson")
    p.add_argument("--spike-factor", type=float, default=4.0)
    p.add_argument("--spike-s", type=float, default=2.0)
    p.add_argument("--shift", type=float, default=2.0, help="drift: input shift in standard deviations")
    p.add_argument("--drift-window-s", type=float, default=3.0, help="drift: the gateway's drift window")

    p = sub.add_parser("compare", help="side-by-side ratios, arms alternating (gateway, floor, peers, ...)")
    _common(p, target=False)
    p.add_argument("--pairs", default="floor,mlserver,pytriton,telemetry,ceiling",
                   help="comma-separated: floor, mlserver, pytriton, oip, telemetry, workers, ceiling, setting")
    p.add_argument("--concurrency", default="16,64", help="comma-separated (telemetry uses the first)")
    p.add_argument("--ceiling-concurrency", type=int, default=32)
    p.add_argument("--ceiling-model", choices=("heavy_cnn", "heavy_cnn_arena", "wide_mlp"), default="heavy_cnn")
    p.add_argument("--workers", type=int, default=2, help="workers pair: instance_count N against 1")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--fresh", action="store_true", help="a new server process for every run")
    p.add_argument("--gateway-env", action="append", metavar="KEY=VALUE",
                   help="a setting for every gateway started (repeatable), e.g. GATEWAY_MALLOC_MMAP_THRESHOLD_BYTES=0")
    p.add_argument("--setting", action="append", metavar="GATEWAY_KEY=VALUE",
                   help="setting pair: a gateway with this setting (repeatable) against one without")
    p.add_argument("--setting-method", choices=METHODS, default="infer", help="setting pair: the RPC loaded")
    p.add_argument("--profile", action="store_true",
                   help="one more run per arm under perf: CPU samples by shared object (bench/profile.py)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.duration_s <= 0 or args.warmup_s < 0 or args.processes < 1 or args.batch_size < 1:
        raise SystemExit("bench: --duration-s > 0, --warmup-s >= 0, --processes >= 1, --batch-size >= 1")
    args.duration_s = min(args.duration_s, 600.0)
    if getattr(args, "address", None):
        from bench.wire import check_loopback
        check_loopback(args.address)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # through the finally blocks that stop servers
    if args.command == "compare":
        bad = [kv for kv in (args.gateway_env or []) + (args.setting or []) if "=" not in kv or not kv.startswith("GATEWAY_")]
        if bad:
            raise SystemExit(f"bench compare: --gateway-env and --setting take GATEWAY_...=VALUE, not {bad}")
        from bench.compare import compare, one_line_summary
        if args.repeats < 1:
            raise SystemExit("bench compare: --repeats >= 1")
        summary = one_line_summary(compare(args))
    else:
        from bench import suite
        summary = getattr(suite, args.command)(args)
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
