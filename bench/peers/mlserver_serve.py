"""Serve an ONNX model with Seldon MLServer 1.7 on loopback (run with the peer venv's python).

    /tmp/peer-mlserver/bin/python bench/peers/mlserver_serve.py --port 50061 \
        --model-path DIR/mlp/1/model.onnx --model-name mlp [--batch-size 64 --batch-time-s 0.0002]

Writes a repository into a temp directory (settings.json, the model's model-settings.json, the
runtime module ``mlserver_runtime.py``) and replaces itself with ``mlserver start``. gRPC on
``--port``; HTTP and metrics on the next two ports, all on 127.0.0.1. Inference in the server's
own process (``parallel_workers: 0``); adaptive batching only with ``--batch-size`` > 1.
"""
import argparse
import json
import os
import pathlib
import shutil
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--http-port", type=int, default=0)
    p.add_argument("--metrics-port", type=int, default=0)
    p.add_argument("--model-path", required=True)
    p.add_argument("--model-name", default="mlp")
    p.add_argument("--features", type=int, default=64)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--parallel-workers", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=0)
    p.add_argument("--batch-time-s", type=float, default=0.0)
    a = p.parse_args()
    root = pathlib.Path(tempfile.mkdtemp(prefix="peer-mlserver-"))
    (root / "settings.json").write_text(json.dumps({
        "debug": False, "host": "127.0.0.1", "grpc_port": a.port,
        "http_port": a.http_port or a.port + 1, "metrics_port": a.metrics_port or a.port + 2,
        "parallel_workers": a.parallel_workers, "load_models_at_startup": True, "metrics_endpoint": None,
        "grpc_max_message_length": 64 << 20}))
    model_dir = root / a.model_name
    model_dir.mkdir()
    shutil.copy(HERE / "mlserver_runtime.py", model_dir / "mlserver_runtime.py")
    settings = {
        "name": a.model_name, "implementation": "mlserver_runtime.OnnxRuntimeModel",
        "parameters": {"uri": str(pathlib.Path(a.model_path).resolve())},
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, a.features]}],
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, a.classes]}],
    }
    if a.batch_size > 1:
        settings.update(max_batch_size=a.batch_size, max_batch_time=a.batch_time_s)
    (model_dir / "model-settings.json").write_text(json.dumps(settings))
    mlserver = pathlib.Path(sys.executable).with_name("mlserver")
    os.execv(str(mlserver), [str(mlserver), "start", str(root)])


if __name__ == "__main__":
    main()
