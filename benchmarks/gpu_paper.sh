#!/usr/bin/env bash
# The paper's sample-wise CIFAR-10 run on one GPU, as two plain commands:
#  1. benchmarks/throughput.py: PGD, model-step and eval throughput of the
#     paper's ResNet-18 (width 64) at 32x32x3, batch 512, K = 20, in float32
#     and bfloat16 compute, with the peak device memory and, where torch
#     imports, the PyTorch twin beside it ($OUT/throughput.json);
#  2. python -m ue_jax.main --config=configs/cifar10_samplewise.py: all 50000
#     training images read from the CIFAR-10 JPEG tar (folder source), the
#     search capped at $GEN_SECONDS s of generation (generate.max_seconds:
#     the noise is released as it is when the cap ends it), the release, and
#     a ResNet-18 trained on it for $EPOCHS epochs in $DTYPE compute (the
#     clean baseline off). Workdir $OUT/run: its metrics.jsonl gets every
#     round and epoch as it ends, its summary JSONs every finished stage.
# The whole output goes to $OUT/gpu_paper.log, nvidia-smi's line to
# $OUT/nvidia_smi.csv.
#
#   bash benchmarks/gpu_paper.sh --prepare            # here, once: .gpu_paper/
#   bash benchmarks/gpu_paper.sh [--data=TAR]         # on the GPU machine
#   bash benchmarks/gpu_paper.sh --smoke --data=TREE  # CPU, under a minute
#
# --prepare copies what the device machine lacks into the ignored folder
# .gpu_paper/: ml_collections and yaml (pure Python, from $PYTHON's
# packages) as .gpu_paper/py/, put on PYTHONPATH, and the CIFAR-10 tar
# ($UE_JAX_CIFAR10, else ../shared/data/cifar10-jpeg.tar.gz) as
# .gpu_paper/cifar10-jpeg.tar.gz. Then the device call:
#
#   run(command="bash benchmarks/gpu_paper.sh", carry=[".gpu_paper"],
#       timeout_s=540)
#
# --smoke runs the same two commands with the same flags and overrides at
# tiny sizes (configs/test_tiny.py on an image tree, a width-4 small CNN),
# to check them on a CPU. Each command runs under `timeout`
# ($THROUGHPUT_LIMIT, default 150 s; $RUN_LIMIT, default 330 s); the
# script's exit status is the first failure's.
# Not yet run on a GPU: the defaults of GEN_SECONDS and EPOCHS are guesses.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

MODE=full
DATA="${UE_JAX_CIFAR10:-}"
for arg in "$@"; do
  case "$arg" in
    --smoke) MODE=smoke ;;
    --prepare) MODE=prepare ;;
    --data=*) DATA="${arg#--data=}" ;;
    *) echo "error: unknown argument $arg" >&2; exit 2 ;;
  esac
done
PYTHON="${PYTHON:-python3}"
SHARED_TAR="../shared/data/cifar10-jpeg.tar.gz"

if [ "$MODE" = prepare ]; then
  mkdir -p .gpu_paper/py
  for mod in ml_collections yaml; do
    src="$("$PYTHON" -c "import os, $mod as m
print(os.path.dirname(m.__file__))")" || exit 1
    rm -rf ".gpu_paper/py/$mod"
    cp -r "$src" ".gpu_paper/py/$mod"
  done
  find .gpu_paper/py \( -name __pycache__ -o -name '*.so' \) -prune \
    -exec rm -rf {} +
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
DTYPE="${DTYPE:-bfloat16}"
if [ "$MODE" = smoke ]; then
  CONFIG=configs/test_tiny.py
  # shellcheck disable=SC2054  # the commas are inside --shape's value
  SIZES=(--model=small_cnn --width=4 --shape=8,8,3 --batch=8 --steps=2
         --repeats=1)
  GEN_SECONDS="${GEN_SECONDS:-60}"
  EPOCHS="${EPOCHS:-1}"
else
  CONFIG=configs/cifar10_samplewise.py
  # shellcheck disable=SC2054
  SIZES=(--model=resnet18 --width=64 --shape=32,32,3 --batch=512 --steps=20
         --repeats=3)
  GEN_SECONDS="${GEN_SECONDS:-180}"
  EPOCHS="${EPOCHS:-10}"
  if [ -z "$DATA" ]; then
    for cand in .gpu_paper/cifar10-jpeg.tar.gz "$SHARED_TAR"; do
      if [ -f "$cand" ]; then DATA="$cand"; break; fi
    done
  fi
fi
if [ -z "$DATA" ] || [ ! -e "$DATA" ]; then
  echo "error: no data at '$DATA': pass --data=PATH or set UE_JAX_CIFAR10" >&2
  exit 2
fi
mkdir -p "$OUT"
if [ -d .gpu_paper/py ]; then
  export PYTHONPATH="$PWD/.gpu_paper/py${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv \
    > "$OUT/nvidia_smi.csv" 2>&1
fi
TWIN=()
if "$PYTHON" -c "import torch" 2>/dev/null; then TWIN=(--torch=True); fi

start=$(date +%s)
rc=0
{
  # JAX takes 75 % of a GPU by default; leave the twin room.
  XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.6}" \
    timeout -k 10 "${THROUGHPUT_LIMIT:-150}" "$PYTHON" \
    benchmarks/throughput.py "${SIZES[@]}" --dtype=float32,bfloat16 \
    "${TWIN[@]}" --out="$OUT/throughput.json" || rc=$?
  echo "gpu_paper.sh: throughput exit $rc after $(( $(date +%s) - start )) s"
  timeout -k 10 "${RUN_LIMIT:-330}" "$PYTHON" -m ue_jax.main \
    --config="$CONFIG" --workdir="$OUT/run" \
    --config.data.source=folder --config.data.path="$DATA" \
    --config.data.cache_dir=none --config.model.compute_dtype="$DTYPE" \
    --config.generate.max_seconds="$GEN_SECONDS" \
    --config.evaluate.epochs="$EPOCHS" --config.evaluate.train_clean=False \
    || { r=$?; [ "$rc" = 0 ] && rc=$r; }
  echo "gpu_paper.sh: exit $rc after $(( $(date +%s) - start )) s"
  exit "$rc"
} 2>&1 | tee "$OUT/gpu_paper.log"
exit "${PIPESTATUS[0]}"
