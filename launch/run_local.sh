#!/usr/bin/env bash
# Runs one config on this machine: generate, release and evaluate.
#   launch/run_local.sh configs/fashion_mnist.py runs/fmnist [--config.x=y ...]
# Uses .venv/bin/python when present, else python3.
set -euo pipefail
if [ "$#" -lt 2 ]; then
  echo "usage: $0 CONFIG WORKDIR [--config.field=value ...]" >&2
  exit 2
fi
config=$1
workdir=$2
shift 2
cd "$(dirname "$0")/.."
python=python3
if [ -x .venv/bin/python ]; then python=.venv/bin/python; fi
exec "$python" -m ue_jax.main --config="$config" --workdir="$workdir" "$@"
