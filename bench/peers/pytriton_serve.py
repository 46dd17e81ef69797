"""Serve an ONNX model with NVIDIA Triton 2.51 through nvidia-pytriton 0.7.0, on CPU, on loopback
(run with the peer venv's python).

    /tmp/peer-pytriton/bin/python bench/peers/pytriton_serve.py --port 50071 \
        --model-path DIR/mlp/1/model.onnx --model-name mlp [--max-batch-size 64 --queue-delay-us 200]

PyTriton starts the bundled ``tritonserver`` with its Python backend; the model is a ``@batch``
callable wrapping one onnxruntime CPU session (one intra-op thread), with Triton's dynamic
batcher on. gRPC on ``--port``, HTTP and metrics on the next two. The Python backend's stub needs
the interpreter's ``lib`` directory on ``LD_LIBRARY_PATH``: set here before Triton starts.
"""
import argparse
import os
import pathlib
import sys
import sysconfig


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--model-path", required=True)
    p.add_argument("--model-name", default="mlp")
    p.add_argument("--max-batch-size", type=int, default=64)
    p.add_argument("--queue-delay-us", type=int, default=200)
    a = p.parse_args()
    libdir = sysconfig.get_config_var("LIBDIR") or str(pathlib.Path(sys.base_prefix) / "lib")
    os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(x for x in (libdir, os.environ.get("LD_LIBRARY_PATH")) if x)

    import numpy as np
    import onnxruntime as ort
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(a.model_path, options, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    outputs = [o.name for o in session.get_outputs()]

    @batch
    def infer(**inputs):
        results = session.run(outputs, {inp.name: inputs[inp.name]})
        return dict(zip(outputs, results))

    config = TritonConfig(grpc_address="127.0.0.1", grpc_port=a.port, http_address="127.0.0.1",
                          http_port=a.port + 1, metrics_address="127.0.0.1", metrics_port=a.port + 2,
                          allow_gpu_metrics=False, exit_on_error=True)
    with Triton(config=config) as triton:
        triton.bind(model_name=a.model_name, infer_func=infer,
                    inputs=[Tensor(name=inp.name, dtype=np.float32, shape=(int(inp.shape[1]),))],
                    outputs=[Tensor(name=o.name, dtype=np.float32, shape=(-1,)) for o in session.get_outputs()],
                    config=ModelConfig(max_batch_size=a.max_batch_size,
                                       batcher=DynamicBatcher(max_queue_delay_microseconds=a.queue_delay_us)))
        triton.serve()


if __name__ == "__main__":
    main()
