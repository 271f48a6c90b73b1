#!/usr/bin/env bash
# The GPU run, in steps of a few minutes each, none of which needs the network, so that a short
# session on a GPU machine gets the most important results first: run them in this order, each as
# its own command, and keep whatever finished.
#
#   bash benchmarks/run_gpu.sh setup        # 0: install, name the GPU, compile every specialisation  (~2 min)
#   bash benchmarks/run_gpu.sh correctness  # 1: whole model vs transformers, TF32 off; graphs vs eager (~2 min)
#   bash benchmarks/run_gpu.sh speed        # 2: whole-model speed, eager and CUDA graphs, host time  (~4 min)
#   bash benchmarks/run_gpu.sh kernels      # 3: every launch timed beside the kernel lab's prediction (~3 min)
#   bash benchmarks/run_gpu.sh extra        # 4: the kernel tests on CUDA and the per-kernel benchmarks
#   bash benchmarks/run_gpu.sh all          # 0-3 in one command (when one command may take ~10 min)
#   bash benchmarks/run_gpu.sh --dry-run    # each step's script on the CPU interpreter, tiny shapes
#
# Every step writes JSON naming the device to $OUT (the device tool's output folder) when it is
# set, else to benchmarks/results/; commit what comes back. Setup installs the checkout in place
# (`pip install --no-deps --no-build-isolation -e .`: torch, triton and transformers are already
# there; nothing is downloaded), because `minialign.kernels` is the top-level kernels/ folder,
# which only the install maps into the package. A step run without it installs first.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-benchmarks/results}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
PY="${PYTHON:-python3}"
usage="usage: bash benchmarks/run_gpu.sh {setup|correctness|speed|kernels|extra|all} | --dry-run"

install() {
  "$PY" -c "import minialign.kernels" 2>/dev/null && return 0
  "$PY" -m pip install -q --no-deps --no-build-isolation -e . || { echo "run_gpu.sh: pip install -e . failed" >&2; exit 2; }
}

need_cuda() {
  if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "run_gpu.sh $1: no CUDA GPU here (torch.cuda.is_available() is False); use --dry-run to check the scripts on the CPU" >&2
    exit 2
  fi
}

step() {  # step NAME: one step of the run
  case "$1" in
    setup)
      install
      nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
      timeout 500 "$PY" benchmarks/warm_triton_cache.py --out "$out/warm_triton_cache.json" 2>&1 | tail -n 20 ;;
    correctness)
      timeout 500 "$PY" benchmarks/gpu_correctness.py --out "$out/gpu_correctness.json" 2>&1 | tail -n 60 ;;
    speed)
      timeout 540 "$PY" benchmarks/gpu_align.py --out "$out/gpu_align.json" 2>&1 | tail -n 80 ;;
    kernels)
      timeout 540 "$PY" benchmarks/kernel_report.py --measure --out "$out/kernel_report_measured.json" 2>&1 | tail -n 30 ;;
    extra)
      timeout 300 "$PY" -m pytest -q tests/test_depthwise_conv.py tests/test_batchnorm_silu.py tests/test_se_gate.py \
        tests/test_layer_norm.py tests/test_attention.py tests/test_gemm.py tests/test_cuda_graphs.py 2>&1 \
        | tail -n 30 | tee "$out/kernel_tests_gpu.txt"
      for op in depthwise_conv batchnorm_silu layer_norm attention gemm; do
        timeout 120 "$PY" "benchmarks/$op.py" --out "$out/${op}_gpu.json" 2>&1 | tail -n 20
      done ;;
  esac
}

case "${1:-}" in
  setup|correctness|speed|kernels|extra)
    need_cuda "$1"; install; step "$1" ;;
  all)
    need_cuda all; install
    for s in setup correctness speed kernels; do step "$s"; done ;;
  --dry-run)
    # The same scripts on the CPU: tiny shapes on the interpreter (or, for the cache warm-up, two
    # compiles for sm_90a); the kernel report's --measure needs a GPU and says so.
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    "$PY" -c "import minialign.kernels" 2>/dev/null || { echo "run_gpu.sh --dry-run: minialign.kernels is not importable; pip install -e . first" >&2; exit 2; }
    status=0
    "$PY" benchmarks/warm_triton_cache.py --dry-run --out "$out/warm_triton_cache_dry_run.json" >/dev/null || status=1
    for script in gpu_correctness gpu_align; do
      TRITON_INTERPRET=1 "$PY" "benchmarks/$script.py" --dry-run --out "$out/${script}_dry_run.json" >/dev/null || status=1
    done
    exit $status ;;
  *)
    echo "run_gpu.sh: unknown step '${1:-}'; $usage" >&2
    exit 2 ;;
esac
