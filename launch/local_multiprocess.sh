#!/usr/bin/env bash
# Runs one config as N JAX processes on this machine, coordinated by
# jax.distributed over localhost (CPU collectives: gloo): the stand-in for a
# multi-host pod. Each process gets JAX_NUM_CPU_DEVICES CPU devices (default 1);
# the mesh spans all N * JAX_NUM_CPU_DEVICES devices. Only process 0 writes.
#   launch/local_multiprocess.sh 2 configs/test_tiny.py runs/tiny2 \
#       --config.data.train_path=train.npz --config.data.test_path=test.npz
# Environment: PORT (coordinator port, default 12355), JAX_NUM_CPU_DEVICES,
# PYTHON (interpreter; default .venv/bin/python when present, else python3).
# Logs of process i go to WORKDIR.logs/process_i.log; if one process fails the
# others are stopped, and the script exits with the first failure's code
# (needs bash >= 5.1 for `wait -n -p`).
set -euo pipefail
if [ "$#" -lt 3 ]; then
  echo "usage: $0 NUM_PROCESSES CONFIG WORKDIR [--config.field=value ...]" >&2
  exit 2
fi
num=$1
config=$2
workdir=$3
shift 3
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then python=.venv/bin/python; fi
port=${PORT:-12355}
logs="${workdir%/}.logs"
mkdir -p "$logs"
pids=()
for ((i = 0; i < num; i++)); do
  JAX_NUM_CPU_DEVICES=${JAX_NUM_CPU_DEVICES:-1} "$python" -m ue_jax.main \
    --config="$config" --workdir="$workdir" \
    --coordinator_address="127.0.0.1:$port" --num_processes="$num" \
    --process_id="$i" "$@" >"$logs/process_$i.log" 2>&1 &
  pids+=("$!")
done
status=0
running=("${pids[@]}")
while [ "${#running[@]}" -gt 0 ]; do
  code=0
  finished=""
  wait -n -p finished "${running[@]}" || code=$?
  left=()
  for pid in "${running[@]}"; do
    if [ "$pid" != "$finished" ]; then left+=("$pid"); fi
  done
  running=("${left[@]}")
  if [ "$code" -ne 0 ]; then
    status=$code
    echo "a process failed (exit $code); stopping the others; see $logs/" >&2
    kill "${pids[@]}" 2>/dev/null || true
    break
  fi
done
wait || true
exit "$status"
