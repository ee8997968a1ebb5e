#!/usr/bin/env bash
# The GPU check of the CUDA local relation kernels, in one run, on a machine
# with a GPU, nvcc and PyTorch (TensorFlow is not needed):
#   1. builds the standalone harness (make cuda-harness);
#   2. agreement with the CPU kernels on random shapes in float32, float16 and
#      bfloat16, then the kernel times at the LR-Net-50 shapes (batch 8, 32);
#   3. the fixed-order backward (op determinism) bit-identical over repeated
#      runs, and compute-sanitizer memcheck and racecheck on a few cases;
#   4. PyTorch's cuDNN depthwise 7x7 at the same shapes, and the table
#      (gpu_report.py) that goes into docs/kernels.md.
#
#   custom_ops/harness/gpu_check.sh [OUTPUT_DIR] [CASES]
#
# Exit status: that of the agreement run, or of a sanitizer run that found
# errors. Every log lands in OUTPUT_DIR (default build/gpu_check).
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${1:-build/gpu_check}
cases=${2:-200}
mkdir -p "$out"
make cuda-harness 2>&1 | tail -3 || exit 2

build/cuda_harness --cases "$cases" | tee "$out/harness.txt"
status=${PIPESTATUS[0]}

build/cuda_harness --determinism --cases 50 | tee "$out/determinism.txt"
determinism_status=${PIPESTATUS[0]}
[ "$determinism_status" -ne 0 ] && [ "$status" -eq 0 ] && status=$determinism_status

if command -v compute-sanitizer >/dev/null; then
  for tool in memcheck racecheck; do
    compute-sanitizer --tool "$tool" --error-exitcode 3 \
        build/cuda_harness --cases 3 --seed 1 --no-benchmark >"$out/$tool.txt" 2>&1
    tool_status=$?
    tail -2 "$out/$tool.txt"
    [ "$tool_status" -ne 0 ] && [ "$status" -eq 0 ] && status=$tool_status
  done
else
  echo "compute-sanitizer not found: memcheck and racecheck skipped" | tee "$out/memcheck.txt"
fi

python3 custom_ops/harness/gpu_report.py "$out" | tee "$out/report.md"
exit "$status"
