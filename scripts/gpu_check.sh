#!/usr/bin/env bash
# The GPU path, checked and measured in one go (under 5 minutes on one NVIDIA GPU):
#   1. the CUDA tests (the cuda-marked cases of tests/test_devices.py);
#   2. throughput at CIFAR scale with random weights (benchmarks/gpu_throughput.py), one process;
#   3. the same with 2 processes: on 2 GPUs where the machine has them, else both on the one.
# On a machine without a CUDA GPU it says "no GPU" and exits 0. It exits non-zero when a CUDA test fails.
#   scripts/gpu_check.sh [OUT_DIR]      (tables also go to OUT_DIR, default runs/gpu_check)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "no GPU: torch sees no CUDA device; nothing to check"
  exit 0
fi
out=${1:-runs/gpu_check}
mkdir -p "$out"
gpus=$("$PY" -c "import torch; print(torch.cuda.device_count())")
"$PY" -c "import torch; print('GPU:', torch.cuda.get_device_name(0), '| devices:', torch.cuda.device_count(), '| torch', torch.__version__)"

echo "== CUDA tests"
tests=0
"$PY" -m pytest -q -m cuda tests/test_devices.py || tests=$?  # the tables are still worth having; the exit code says

echo "== throughput, 1 process"
"$PY" benchmarks/gpu_throughput.py --device cuda --json "$out/one.json"
"$PY" benchmarks/gpu_throughput.py --table "$out/one.json" | tee "$out/table-1-process.md"

echo "== throughput, 2 processes ($([ "$gpus" -ge 2 ] && echo "on 2 GPUs" || echo "sharing one GPU"))"
second=$([ "$gpus" -ge 2 ] && echo cuda:1 || echo cuda:0)
# Without the compiled row and with 2 timed calls per row, to stay within 5 minutes in all.
"$PY" benchmarks/gpu_throughput.py --device cuda:0 --no-compile --repeats 2 --json "$out/two-a.json" &
a=$!
"$PY" benchmarks/gpu_throughput.py --device "$second" --no-compile --repeats 2 --json "$out/two-b.json" &
b=$!
wait $a && wait $b
"$PY" benchmarks/gpu_throughput.py --table "$out/two-a.json" "$out/two-b.json" --peaks "$out/one.json" | tee "$out/table-2-processes.md"
[ "$tests" -eq 0 ] || echo "CUDA tests FAILED (pytest exit $tests)"
exit "$tests"
