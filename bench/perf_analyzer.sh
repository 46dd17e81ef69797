#!/usr/bin/env bash
# NVIDIA's perf_analyzer, unmodified, against the gateway's Open Inference Protocol service:
# unary and --streaming concurrency sweeps on the demo classifier.
#
#   bash bench/perf_analyzer.sh [ADDRESS]     # default: starts `gateway serve` on 127.0.0.1:18788
#
# perf_analyzer comes from the tritonclient 2.41.0 manylinux wheel (PyPI's perf-analyzer
# package is a placeholder); it needs Debian's libb64-0d and libcudart.so.12 (from
# nvidia-cuda-runtime-cu12) even without a GPU. Installed into its own venv ($PA_VENV,
# default /tmp/perf-analyzer-venv): tritonclient 2.41 pins an older protobuf than the gateway.
set -euo pipefail
venv=${PA_VENV:-/tmp/perf-analyzer-venv}
if [ ! -x "$venv/bin/perf_analyzer" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'tritonclient[grpc]==2.41.0' nvidia-cuda-runtime-cu12
fi
if ! ldconfig -p | grep -q libb64.so.0d; then
  echo "perf_analyzer needs libb64-0d: apt-get install -y libb64-0d" >&2
  exit 2
fi
cudart=$("$venv/bin/python" -c "import nvidia.cuda_runtime, os; print(os.path.join(nvidia.cuda_runtime.__path__[0], 'lib'))")
export LD_LIBRARY_PATH="$cudart${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
address=${1:-}
if [ -z "$address" ]; then
  address=127.0.0.1:18788
  python -m gateway serve --port 18788 --admin-port 0 > /tmp/perf-analyzer-gateway.log 2>&1 &
  server=$!
  trap 'kill -INT $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
  for _ in $(seq 120); do grep -q "gateway.server: ready" /tmp/perf-analyzer-gateway.log && break; sleep 0.5; done
fi
case "$address" in 127.0.0.1:*|localhost:*|\[::1\]:*) ;; *) echo "loopback addresses only: $address" >&2; exit 2;; esac
pa() { timeout 300 "$venv/bin/perf_analyzer" -m classifier -i grpc -u "$address" --measurement-interval 3000 -s 40 "$@"; }
echo "== unary, concurrency 1..16"
pa --concurrency-range 1:16:3
echo "== --streaming, concurrency 4 and 16"
pa --streaming --concurrency-range 4:16:12
