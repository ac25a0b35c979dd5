#!/usr/bin/env bash
# The prepared accelerator check (at most about 5 minutes on one GPU): ue_jax's
# PGD and model-step throughput of the paper's ResNet-18 at 32x32x3 in float32
# and bfloat16, one CIFAR-shaped generation round on synthetic data with its
# peak memory, and the PyTorch twin on the same GPU where torch imports.
#
#   benchmarks/gpu_check.sh [OUT_DIR]            # on the GPU machine
#   benchmarks/gpu_check.sh --smoke [OUT_DIR]    # tiny sizes on a CPU (tests)
#
# Installs nothing: run it in a venv holding ue_jax with jax[cuda] (and torch
# for the comparison). Writes OUT_DIR/gpu_check.json (default: runs/gpu_check).
set -euo pipefail
cd "$(dirname "$0")/.."

SMOKE=()
if [ "${1:-}" = "--smoke" ]; then
  SMOKE=(--smoke)
  shift
fi
OUT="${1:-runs/gpu_check}"
PYTHON="${PYTHON:-python}"
mkdir -p "$OUT"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv \
    | tee "$OUT/nvidia_smi.csv"
fi
timeout 300 "$PYTHON" benchmarks/gpu_check.py "${SMOKE[@]}" \
  --out="$OUT/gpu_check.json"
