#!/usr/bin/env bash
# The paper's sample-wise CIFAR-10 run on one GPU in at most 8 minutes of
# wall time (benchmarks/gpu_paper.py): (a) ue_jax and PyTorch ResNet-18
# throughput in float32 and bfloat16, (b) the paper's search on all 50000
# CIFAR-10 training images read from the JPEG tar (folder source) to the stop
# rule or a wall-clock cap, then the release, (c) a ResNet-18 trained on the
# release for as many epochs as the budget leaves (at most 30), test accuracy
# per epoch. Results go to $OUT after every stage: gpu_paper.json (the
# stages), metrics.jsonl (rounds and epochs as they end), gpu_paper.log (the
# whole output), nvidia_smi.csv.
#
#   bash benchmarks/gpu_paper.sh --prepare   # here, once: fills .gpu_paper/
#   bash benchmarks/gpu_paper.sh             # on the GPU machine ($OUT)
#   bash benchmarks/gpu_paper.sh --smoke     # tiny sizes on a CPU (tests)
#
# --prepare copies what the device machine lacks into the ignored folder
# .gpu_paper/ (about 20 MiB): ml_collections (pure Python, from this
# machine's interpreter, $PYTHON) as .gpu_paper/py/ml_collections, and the
# CIFAR-10 tar ($UE_JAX_CIFAR10, else ../shared/data/cifar10-jpeg.tar.gz) as
# .gpu_paper/cifar10-jpeg.tar.gz. The device call (the `run` tool; no GPU
# was lent to the session that wrote this, so it has not run yet):
#
#   run(command="bash benchmarks/gpu_paper.sh",
#       carry=[".gpu_paper"], timeout_s=540)
#
# The script stops Python at 470 s ($GPU_PAPER_LIMIT; its stages plan for
# $GPU_PAPER_BUDGET = 440 s) and leaves every finished stage in $OUT.
# Data: --data=PATH or $UE_JAX_CIFAR10, else .gpu_paper/cifar10-jpeg.tar.gz,
# else ../shared/data/cifar10-jpeg.tar.gz.
# Python: $PYTHON (default python3; on the device it holds jax and torch).
set -uo pipefail
cd "$(dirname "$0")/.."

MODE=full
DATA="${UE_JAX_CIFAR10:-}"
EXTRA=()
for arg in "$@"; do
  case "$arg" in
    --smoke) MODE=smoke ;;
    --prepare) MODE=prepare ;;
    --data=*) DATA="${arg#--data=}" ;;
    *) EXTRA+=("$arg") ;;
  esac
done
PYTHON="${PYTHON:-python3}"
SHARED_TAR="../shared/data/cifar10-jpeg.tar.gz"

if [ "$MODE" = prepare ]; then
  mkdir -p .gpu_paper/py
  src="$("$PYTHON" -c 'import os, ml_collections as m
print(os.path.dirname(m.__file__))')" || exit 1
  rm -rf .gpu_paper/py/ml_collections
  cp -r "$src" .gpu_paper/py/ml_collections
  find .gpu_paper/py -name __pycache__ -prune -exec rm -rf {} +
  tar_src="${DATA:-$SHARED_TAR}"
  if [ ! -f "$tar_src" ]; then
    echo "error: no CIFAR-10 tar at $tar_src" >&2
    exit 1
  fi
  rm -f .gpu_paper/cifar10-jpeg.tar.gz
  cp "$tar_src" .gpu_paper/cifar10-jpeg.tar.gz
  chmod u+w .gpu_paper/cifar10-jpeg.tar.gz
  du -sh .gpu_paper
  exit 0
fi

OUT="${OUT:-runs/gpu_paper}"
mkdir -p "$OUT"
if [ -d .gpu_paper/py ]; then
  export PYTHONPATH="$PWD/.gpu_paper/py${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
ARGS=(--out="$OUT")
if [ "$MODE" = smoke ]; then
  # A budget no part reaches on a CPU: every part runs.
  ARGS+=(--smoke --budget_s=400)
  LIMIT=450
else
  if [ -z "$DATA" ]; then
    for cand in .gpu_paper/cifar10-jpeg.tar.gz "$SHARED_TAR"; do
      if [ -f "$cand" ]; then DATA="$cand"; break; fi
    done
  fi
  ARGS+=(--data="$DATA" --budget_s="${GPU_PAPER_BUDGET:-440}")
  LIMIT="${GPU_PAPER_LIMIT:-470}"
  # JAX takes 75 % of the GPU by default; leave the PyTorch twin room.
  export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.6}"
fi
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv \
    > "$OUT/nvidia_smi.csv" 2>&1
fi
start=$(date +%s)
timeout -k 10 "$LIMIT" "$PYTHON" benchmarks/gpu_paper.py "${ARGS[@]}" \
  "${EXTRA[@]}" 2>&1 | tee "$OUT/gpu_paper.log"
rc=${PIPESTATUS[0]}
echo "gpu_paper.sh: exit $rc after $(( $(date +%s) - start )) s" \
  | tee -a "$OUT/gpu_paper.log"
exit "$rc"
