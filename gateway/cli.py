"""``gateway serve | predict | models | stats | demo-repository``."""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import pathlib
import sys

import numpy as np

DEFAULT_ADDRESS = "127.0.0.1:8001"


def _cmd_serve(args: argparse.Namespace) -> int:
    from . import logs
    from .config.settings import SettingsError, load_settings

    try:
        settings = load_settings(args.config, model_repository=args.model_repository, host=args.host,
                                 port=args.port, admin_port=args.admin_port)
    except SettingsError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format)
    from .app import serve

    try:
        return asyncio.run(serve(settings))
    except FileNotFoundError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2


def _random_input(spec, rng: np.random.Generator) -> np.ndarray:
    from .adapters.grpc_v1.dtypes import WIRE_TO_NUMPY

    dtype = WIRE_TO_NUMPY[spec.dtype]
    shape = tuple(1 if d < 0 else d for d in spec.shape)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, shape).astype(dtype)
    return rng.integers(0, 10, shape).astype(dtype)


def _load_inputs(path: pathlib.Path, metadata) -> dict[str, np.ndarray]:
    from .adapters.grpc_v1.dtypes import WIRE_TO_NUMPY

    specs = {s.name: s for s in metadata.inputs}
    if path.suffix == ".npy":
        if len(specs) != 1:
            raise ValueError(f"a .npy file gives one array but the model takes {sorted(specs)}; use .json")
        (name, spec), = specs.items()
        return {name: np.load(path, allow_pickle=False).astype(WIRE_TO_NUMPY[spec.dtype], copy=False)}
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object mapping input names to arrays")
    out = {}
    for name, value in data.items():
        dtype = WIRE_TO_NUMPY[specs[name].dtype] if name in specs else None
        out[name] = np.asarray(value, dtype=dtype)
    return out


def _cmd_predict(args: argparse.Namespace) -> int:
    import grpc

    from .client import GatewayClient

    with GatewayClient(args.address) as client:
        try:
            meta = client.metadata(args.model, args.version)
            if args.input:
                inputs = _load_inputs(pathlib.Path(args.input), meta)
            else:
                rng = np.random.default_rng(args.seed)
                inputs = {s.name: _random_input(s, rng) for s in meta.inputs}
            response, outputs = client.predict(args.model, inputs, version=args.version, timeout_s=args.timeout_s)
        except grpc.RpcError as exc:
            print(f"gateway predict: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
        except (ValueError, OSError) as exc:
            print(f"gateway predict: {exc}", file=sys.stderr)
            return 2
    summary = {
        "request_id": response.request_id,
        "served_by": response.served_by,
        "degraded": response.degraded,
        "outputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype), "values": v.tolist()}
                    for k, v in outputs.items()},
    }
    if response.degraded:
        summary["fallback_reason"] = response.fallback_reason
    if response.confidence:
        summary["confidence"] = [round(c, 6) for c in response.confidence]
        summary["predicted_label"] = list(response.predicted_label)
    print(json.dumps(summary, indent=2))
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    import grpc

    from .client import GatewayClient

    with GatewayClient(args.address) as client:
        try:
            models = client.models()
        except grpc.RpcError as exc:
            print(f"gateway models: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    print("# model  versions  latest  state  provider")
    for m in models:
        line = f"{m.name}  versions={','.join(m.versions) or '-'}  latest={m.latest_version or '-'}  " \
               f"state={m.state}  provider={m.execution_provider or '-'}"
        if m.error:
            line += f"  error={m.error}"
        print(line)
    return 0



def _num(value: float, width: int, decimals: int) -> str:
    """A right-aligned number, or "-" where there is none yet (no requests in the window)."""
    return f"{'-':>{width}}" if math.isnan(value) else f"{value:>{width}.{decimals}f}"

def _cmd_stats(args: argparse.Namespace) -> int:
    import grpc

    from .client import GatewayClient

    with GatewayClient(args.address) as client:
        try:
            stats = client.stats(args.model, args.window_s)
        except grpc.RpcError as exc:
            print(f"gateway stats: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    print(f"# window {args.window_s:g} s; ring drops {stats.ring_drops}")
    print(f"# {'model@version':<22}{'req/s':>9}{'rows/s':>10}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}"
          f"{'max ms':>9}{'err %':>7}{'degr %':>7}{'batch':>7}{'conf':>6}")
    for m in stats.models:
        if not m.model:
            continue
        lat = m.latency
        print(f"{m.model + '@' + m.version:<24}{m.requests_per_s:>9.1f}{m.rows_per_s:>10.1f}"
              f"{_num(lat.p50_ms, 9, 3)}{_num(lat.p90_ms, 9, 3)}{_num(lat.p99_ms, 9, 3)}"
              f"{_num(lat.max_ms, 9, 3)}{100 * m.error_share:>7.2f}{100 * m.degraded_share:>7.2f}"
              f"{_num(m.mean_batch_size, 7, 1)}{_num(m.mean_confidence, 6, 2)}")
        for f in m.top_shifts:
            print(f"    input {f.input}[{f.feature}]: mean {f.mean:.4g} std {f.std:.4g} "
                  f"shift {f.shift_score:+.2f} sd, NaN {f.nan_count}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import write_demo_repository

    root = write_demo_repository(pathlib.Path(args.directory))
    print(root)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="gRPC inference gateway for ONNX models")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve a model repository over gRPC")
    serve.add_argument("--model-repository", help="directory of <model>/<version>/model.onnx "
                       "(default: the bundled demo models)")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="gRPC port (default 8001; 0 picks a free one)")
    serve.add_argument("--admin-port", type=int,
                       help="admin HTTP port for /metrics, /healthz, /readyz (default 8002; 0: off)")
    serve.add_argument("--config", help="YAML settings file (see README)")
    serve.set_defaults(func=_cmd_serve)

    predict = sub.add_parser("predict", help="send one request and print the outputs")
    predict.add_argument("--model", required=True)
    predict.add_argument("--version", default="")
    predict.add_argument("--address", default=DEFAULT_ADDRESS)
    predict.add_argument("--input", help=".npy (single-input models) or .json {input: array}; "
                         "default: random values of the right shape")
    predict.add_argument("--seed", type=int, default=0)
    predict.add_argument("--timeout-s", type=float, default=30.0)
    predict.set_defaults(func=_cmd_predict)

    models = sub.add_parser("models", help="list the models a gateway serves")
    models.add_argument("--address", default=DEFAULT_ADDRESS)
    models.set_defaults(func=_cmd_models)

    stats = sub.add_parser("stats", help="live latency, throughput, errors and input shifts per model")
    stats.add_argument("--address", default=DEFAULT_ADDRESS)
    stats.add_argument("--model", default="")
    stats.add_argument("--window-s", type=float, default=10.0)
    stats.set_defaults(func=_cmd_stats)

    demo = sub.add_parser("demo-repository", help="write the demo model repository to a directory")
    demo.add_argument("directory")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
