"""The floor: the least a Python gRPC server can do to serve ``gateway.v1.Gateway/Predict``.

It loads the same ``model.onnx`` files as the gateway into plain onnxruntime sessions (CPU
provider, 1 intra-op thread, 1 inter-op thread, sequential) and answers ``Predict`` with nothing
else: ``numpy.frombuffer`` on the input bytes, ``session.run``, ``tobytes`` into the response. No
validation beyond what numpy/onnxruntime do, no batching, no telemetry, no request ids, no
confidence. ``GetModel`` answers enough metadata for ``bench/load.py`` to build inputs, and
``grpc.health.v1`` reports SERVING once the sessions are loaded.

Two implementations, chosen with ``--mode``:

- ``sync`` (default): ``grpc.server`` with a ``ThreadPoolExecutor`` of ``--threads`` (default 4),
  the handler runs the session inline on its pool thread (``session.run`` releases the GIL).
- ``aio``: ``grpc.aio`` server, handler runs the session inline on the event loop (the models it
  is compared on run in tens of microseconds; a hop to an executor thread would cost more).

Which is faster was measured, not assumed: 2-core bench machine, 2026-11-23, classifier, batch 1,
16 closed-loop ``bench/load.py`` workers (grpc.aio client on the same machine), runs of 6 s
alternating between servers, two sessions of 3 runs each (the machine was shared and noisy, load
average 4-6). Median req/s per session:

    aio                  1,170  and 1,387
    sync, 16 threads     1,540
    sync,  4 threads     1,754  and 1,981
    sync,  2 threads     1,854

The sync server with a small pool is the faster floor, so it is the default and what
``bench/run_serving.py`` compares the gateway with. (Fewer threads than in-flight requests is
fine: grpcio queues the rest in the core, and fewer threads means less GIL hand-over.)

    python bench/floor_server.py --port 50051 --model-repository DIR [--models classifier,...]
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import pathlib
import signal
import sys
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import onnxruntime as ort
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway._proto import gateway_pb2 as pb
from gateway._proto import gateway_pb2_grpc as pb_grpc

# Wire dtype <-> numpy, for the dtypes the demo models use (plus the common ones).
WIRE_TO_NUMPY = {
    pb.DATA_TYPE_FLOAT32: np.dtype("<f4"), pb.DATA_TYPE_FLOAT64: np.dtype("<f8"),
    pb.DATA_TYPE_INT64: np.dtype("<i8"), pb.DATA_TYPE_INT32: np.dtype("<i4"),
    pb.DATA_TYPE_FLOAT16: np.dtype("<f2"), pb.DATA_TYPE_UINT8: np.dtype("u1"),
    pb.DATA_TYPE_INT8: np.dtype("i1"), pb.DATA_TYPE_BOOL: np.dtype("?"),
}
NUMPY_TO_WIRE = {v: k for k, v in WIRE_TO_NUMPY.items()}
ONNX_TO_WIRE = {"tensor(float)": pb.DATA_TYPE_FLOAT32, "tensor(double)": pb.DATA_TYPE_FLOAT64,
                "tensor(int64)": pb.DATA_TYPE_INT64, "tensor(int32)": pb.DATA_TYPE_INT32,
                "tensor(float16)": pb.DATA_TYPE_FLOAT16, "tensor(uint8)": pb.DATA_TYPE_UINT8,
                "tensor(int8)": pb.DATA_TYPE_INT8, "tensor(bool)": pb.DATA_TYPE_BOOL}


class Model:
    def __init__(self, name: str, path: pathlib.Path):
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        self.name = name
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        self.output_names = [o.name for o in self.session.get_outputs()]
        shape = lambda s: [d if isinstance(d, int) and d >= 0 else -1 for d in s]  # noqa: E731
        self.metadata = pb.ModelMetadata(
            name=name, version="1", versions=["1"], platform="onnxruntime",
            execution_provider="CPUExecutionProvider", state="READY",
            inputs=[pb.TensorSpec(name=i.name, dtype=ONNX_TO_WIRE[i.type], shape=shape(i.shape))
                    for i in self.session.get_inputs()],
            outputs=[pb.TensorSpec(name=o.name, dtype=ONNX_TO_WIRE[o.type], shape=shape(o.shape))
                     for o in self.session.get_outputs()])

    def predict(self, request: pb.PredictRequest) -> pb.PredictResponse:
        feeds = {t.name: np.frombuffer(t.data, dtype=WIRE_TO_NUMPY[t.dtype]).reshape(tuple(t.shape))
                 for t in request.inputs}
        values = self.session.run(self.output_names, feeds)
        return pb.PredictResponse(
            model=self.name, version="1",
            outputs=[pb.Tensor(name=n, dtype=NUMPY_TO_WIRE[v.dtype], shape=v.shape, data=v.tobytes())
                     for n, v in zip(self.output_names, values)])


def load_models(repository: pathlib.Path, names: list[str] | None) -> dict[str, Model]:
    models = {}
    for model_dir in sorted(p for p in repository.iterdir() if p.is_dir()):
        if names and model_dir.name not in names:
            continue
        versions = sorted((v for v in model_dir.iterdir() if (v / "model.onnx").is_file()),
                          key=lambda v: (not v.name.isdigit(), int(v.name) if v.name.isdigit() else 0, v.name))
        if versions:
            models[model_dir.name] = Model(model_dir.name, versions[-1] / "model.onnx")
    missing = set(names or ()) - set(models)
    if missing:
        raise SystemExit(f"floor_server: models not found in {repository}: {sorted(missing)}")
    return models


class SyncServicer(pb_grpc.GatewayServicer):
    def __init__(self, models: dict[str, Model]):
        self.models = models

    def Predict(self, request, context):
        model = self.models.get(request.model)
        if model is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model {request.model!r}")
        return model.predict(request)

    def GetModel(self, request, context):
        model = self.models.get(request.name)
        if model is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model {request.name!r}")
        return model.metadata


class AioServicer(pb_grpc.GatewayServicer):
    def __init__(self, models: dict[str, Model]):
        self.models = models

    async def Predict(self, request, context):
        model = self.models.get(request.model)
        if model is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model {request.model!r}")
        return model.predict(request)

    async def GetModel(self, request, context):
        model = self.models.get(request.name)
        if model is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model {request.name!r}")
        return model.metadata


OPTIONS = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20),
           ("grpc.so_reuseport", 0)]


def serve_sync(models, host: str, port: int, threads: int) -> int:
    from grpc_health.v1.health import HealthServicer

    server = grpc.server(ThreadPoolExecutor(threads), options=OPTIONS)
    pb_grpc.add_GatewayServicer_to_server(SyncServicer(models), server)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    server.start()
    health.set("", health_pb2.HealthCheckResponse.SERVING)
    print(f"floor_server (sync, {threads} threads) listening on {host}:{bound}", file=sys.stderr, flush=True)
    done = __import__("threading").Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    server.stop(1).wait()
    return 0


async def serve_aio(models, host: str, port: int) -> int:
    from grpc_health.v1.health import aio as health_aio

    server = grpc.aio.server(options=OPTIONS)
    pb_grpc.add_GatewayServicer_to_server(AioServicer(models), server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    print(f"floor_server (aio) listening on {host}:{bound}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Minimal gRPC Predict server over onnxruntime (the floor).")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=50051)
    p.add_argument("--model-repository", help="<model>/<version>/model.onnx directory "
                   "(default: the gateway's bundled demo repository)")
    p.add_argument("--models", default="", help="comma-separated subset to load (default: all)")
    p.add_argument("--mode", choices=("aio", "sync"), default="sync")
    p.add_argument("--threads", type=int, default=4, help="sync mode: server thread pool size")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.model_repository:
        repository = pathlib.Path(args.model_repository)
    else:
        from gateway.demo import demo_repository

        repository = demo_repository()
    models = load_models(repository, [m for m in args.models.split(",") if m] or None)
    if args.mode == "sync":
        return serve_sync(models, args.host, args.port, args.threads)
    return asyncio.run(serve_aio(models, args.host, args.port))


if __name__ == "__main__":
    sys.exit(main())
