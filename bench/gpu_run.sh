#!/usr/bin/env bash
# The GPU pass: start the gateway on the demo models with onnxruntime-gpu (CUDA execution provider,
# IO binding), check which provider each model really got, then measure with bench/load.py:
#   - wide_mlp, batch-1 requests, concurrency 32: dynamic batching on vs GATEWAY_BATCHING=false
#   - classifier, batch-1, concurrency 16: Predict vs PredictStream
#   - the raw session on the GPU: session.run vs IO binding, batch 1 and 64 (no gRPC)
# and run the request-path tests on the GPU. Expects the package importable (PYTHONPATH or
# installed) with the Cython kernels built. Output: one JSON line per measurement on stdout.
set -u
PY=${PY:-python3}
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
DEMO=$(mktemp -d)/demo
$PY -m gateway demo-repository "$DEMO" >/dev/null
$PY - <<'PY'
import json, time, numpy as np, onnxruntime as ort
from gateway.runtime import providers
print(json.dumps({"onnxruntime": ort.__version__, "available": list(providers.available())}))
PY
$PY - "$DEMO" <<'PY'
import json, sys, time, numpy as np, onnxruntime as ort
from gateway.runtime import providers
providers.available()
path = f"{sys.argv[1]}/wide_mlp/1/model.onnx"
o = ort.SessionOptions(); o.intra_op_num_threads = 1
s = ort.InferenceSession(path, o, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
for b in (1, 64):
    x = np.random.rand(b, 256).astype(np.float32)
    def run(): s.run(None, {"features": x})
    def bound():
        io = s.io_binding(); io.bind_cpu_input("features", x); io.bind_output("probabilities", "cpu")
        s.run_with_iobinding(io); io.copy_outputs_to_cpu()
    for name, fn in (("run", run), ("io_binding", bound)):
        for _ in range(50): fn()
        reps = []
        for _ in range(5):
            t = time.perf_counter(); n = 300
            for _ in range(n): fn()
            reps.append((time.perf_counter() - t) / n)
        med = sorted(reps)[2]
        print(json.dumps({"session": "wide_mlp", "provider": s.get_providers()[0], "batch": b, "call": name,
                          "us_per_call": round(med * 1e6, 1), "rows_per_s": round(b / med)}))
PY
port=18001
serve() {  # $1: extra env
  env $1 $PY -m gateway serve --model-repository "$DEMO" --port $port >>"$OUT/serve.log" 2>&1 &
  gw=$!
  for _ in $(seq 1 120); do $PY -m gateway models --address 127.0.0.1:$port >"$OUT/models.txt" 2>/dev/null && break; sleep 0.5; done
  cat "$OUT/models.txt"
}
load() {  # model concurrency method label
  for rep in 1 2 3; do
    r=$($PY bench/load.py --address 127.0.0.1:$port --model $1 --concurrency $2 --method $3 \
        --duration-s 6 --warmup-s 2 --quiet | tail -1)
    echo "{\"scenario\": \"$4\", \"repeat\": $rep, \"result\": $r}"
  done
}
serve "GATEWAY_BATCHING=true"
load wide_mlp 32 predict "wide_mlp c32 batching on"
load classifier 16 predict "classifier c16 predict"
load classifier 16 stream "classifier c16 stream"
kill -TERM $gw; wait $gw; echo "{\"exit_after_sigterm\": $?}"
serve "GATEWAY_BATCHING=false"
load wide_mlp 32 predict "wide_mlp c32 batching off"
kill -TERM $gw; wait $gw
$PY -m pytest -q -p no:cacheprovider tests/e2e/test_predict.py tests/repository tests/e2e/test_stats.py 2>&1 | tail -3
