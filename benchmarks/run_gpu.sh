#!/usr/bin/env bash
# Everything a session with a lent GPU should run, in one go (about 13 minutes on an H100):
# the kernel tests on CUDA in float32 and bfloat16, every kernel benchmark, then the whole model
# (benchmarks/gpu_align.py). With less device time, run gpu_align.py first, alone. Results go to
# $OUT (the device tool's output folder) when it is set, else to benchmarks/results/.
#
#   PYTHONPATH=. bash benchmarks/run_gpu.sh
#
# Commit the JSON files it writes (they name the device).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-benchmarks/results}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
python -m pytest -q tests/test_depthwise_conv.py tests/test_batchnorm_silu.py tests/test_se_gate.py \
  tests/test_layer_norm.py tests/test_attention.py tests/test_gemm.py 2>&1 | tail -n 30 | tee "$out/kernel_tests_gpu.txt"
for op in depthwise_conv batchnorm_silu layer_norm attention gemm; do
  timeout 300 python "benchmarks/$op.py" --out "$out/${op}_gpu.json" 2>&1 | tail -n 40
done
# The whole model (the Triton-backend issue): ~3 minutes with the torch.compile baselines.
timeout 400 python benchmarks/gpu_align.py --out "$out/gpu_align.json" 2>&1 | tail -n 60
# The kernel lab's prediction beside the measured time of every launch (calibration).
timeout 300 python benchmarks/kernel_report.py --measure --out "$out/kernel_report_measured.json" 2>&1 | tail -n 20
