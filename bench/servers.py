"""The servers the suite starts: the gateway, the grpcio floor, and the peers (MLServer, Triton
through PyTriton), each one process group on a loopback port, pinned with ``taskset`` when CPUs
are given. Built on ``bench/run_serving.py``'s :class:`Server` (start, SIGSTOP/SIGCONT, stop);
the peers are ready when the Open Inference Protocol says the server and the model are.

The peers run from their own virtual environments (not runtime dependencies of the gateway):

    python3 -m venv /tmp/peer-mlserver && /tmp/peer-mlserver/bin/pip install mlserver==1.7.1 onnxruntime
    python3 -m venv /tmp/peer-pytriton && /tmp/peer-pytriton/bin/pip install nvidia-pytriton==0.7.0 onnxruntime
"""
from __future__ import annotations

import os
import pathlib
import sys
import time

import grpc

from bench.run_serving import Server, ServerStartError, cpu_set
from bench.wire import oip_modules

BENCH = pathlib.Path(__file__).resolve().parent
PEER_PYTHON = {"mlserver": os.environ.get("BENCH_MLSERVER_PYTHON", "/tmp/peer-mlserver/bin/python"),
               "pytriton": os.environ.get("BENCH_PYTRITON_PYTHON", "/tmp/peer-pytriton/bin/python")}


class OipServer(Server):
    """A server that is ready when ``ServerReady`` and ``ModelReady(model)`` both say so."""

    def __init__(self, *args, model: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.model = model

    def wait_serving(self, timeout_s: float = 120.0) -> None:
        pb, svc = oip_modules()
        deadline = time.monotonic() + timeout_s
        with grpc.insecure_channel(self.address) as channel:
            stub = svc.GRPCInferenceServiceStub(channel)
            while time.monotonic() < deadline:
                if self.proc is None or self.proc.poll() is not None:
                    code = None if self.proc is None else self.proc.returncode
                    raise ServerStartError(f"{self.label} exited with code {code}: {self.log_tail()}")
                try:
                    if stub.ServerReady(pb.ServerReadyRequest(), timeout=1.0).ready and \
                            stub.ModelReady(pb.ModelReadyRequest(name=self.model), timeout=1.0).ready:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.3)
        raise ServerStartError(f"{self.label} not ready after {timeout_s:.0f} s: {self.log_tail()}")


def gateway(label: str, repository: pathlib.Path, logdir: pathlib.Path, cpus: str | None,
            env: dict[str, str] | None = None) -> Server:
    argv = [sys.executable, "-m", "gateway", "serve", "--port", "{port}", "--model-repository", str(repository)]
    return Server(label, argv, {"GATEWAY_GRACE_PERIOD_S": "1", "GATEWAY_ADMIN_PORT": "0", **(env or {})},
                  logdir, cpu_set(cpus))


def floor(repository: pathlib.Path, logdir: pathlib.Path, cpus: str | None, models: str) -> Server:
    argv = [sys.executable, str(BENCH / "floor_server.py"), "--port", "{port}", "--model-repository",
            str(repository), "--models", models, "--mode", "sync"]
    return Server("floor", argv, {}, logdir, cpu_set(cpus))


def peer_available(name: str) -> str | None:
    """None when the peer's interpreter exists, else why it can't run."""
    python = PEER_PYTHON[name]
    if not os.path.exists(python):
        return (f"{name}: no interpreter at {python} (install it in its own venv: see bench/README.md; "
                f"BENCH_{name.upper()}_PYTHON points elsewhere)")
    return None


def mlserver(repository: pathlib.Path, model: str, logdir: pathlib.Path, cpus: str | None,
             batch_size: int = 0, batch_time_s: float = 0.0) -> OipServer:
    argv = [PEER_PYTHON["mlserver"], str(BENCH / "peers" / "mlserver_serve.py"), "--port", "{port}",
            "--model-path", str(repository / model / "1" / "model.onnx"), "--model-name", model,
            "--http-port", "0", "--metrics-port", "0"]
    if batch_size > 1:
        argv += ["--batch-size", str(batch_size), "--batch-time-s", str(batch_time_s)]
    server = OipServer("mlserver", argv, {}, logdir, cpu_set(cpus), model=model)
    # its HTTP and metrics servers get ports of their own, free now
    from bench.run_serving import free_port
    server.argv[server.argv.index("--http-port") + 1] = str(free_port())
    server.argv[server.argv.index("--metrics-port") + 1] = str(free_port())
    return server


def pytriton(repository: pathlib.Path, model: str, logdir: pathlib.Path, cpus: str | None,
             max_batch_size: int = 64, queue_delay_us: int = 200) -> OipServer:
    argv = [PEER_PYTHON["pytriton"], str(BENCH / "peers" / "pytriton_serve.py"), "--port", "{port}",
            "--model-path", str(repository / model / "1" / "model.onnx"), "--model-name", model,
            "--max-batch-size", str(max_batch_size), "--queue-delay-us", str(queue_delay_us)]
    return OipServer("pytriton", argv, {}, logdir, cpu_set(cpus), model=model)
