#!/usr/bin/env bash
# Runs one config on every worker of a Cloud TPU VM pod slice (e.g. v4-32:
# 4 workers x 4 chips; v5e-256: 64 workers x 4 chips). Each worker runs the
# same command; jax.distributed finds the others by itself (--distributed).
#   launch/tpu_pod.sh setup TPU_NAME ZONE            # once: clone + install
#   launch/tpu_pod.sh run TPU_NAME ZONE CONFIG WORKDIR [--config.x=y ...]
# WORKDIR must be on a filesystem that every worker sees (NFS/Filestore or a
# gcsfuse mount): Orbax checkpoints are written by all workers, the other
# files by worker 0.
# Environment: REPO_URL (what `setup` clones, default this repository's
# origin), REPO_DIR (checkout on the workers, default ue_jax in the home
# directory), PROJECT (gcloud project, default gcloud's current one).
set -euo pipefail
if [ "$#" -lt 3 ]; then
  echo "usage: $0 setup|run TPU_NAME ZONE [CONFIG WORKDIR [--config.x=y ...]]" >&2
  exit 2
fi
action=$1
tpu=$2
zone=$3
shift 3
repo_dir=${REPO_DIR:-ue_jax}
project_flag=()
if [ -n "${PROJECT:-}" ]; then project_flag=(--project="$PROJECT"); fi

on_all_workers() {
  gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" "${project_flag[@]}" \
    --worker=all --command="$1"
}

case "$action" in
  setup)
    url=${REPO_URL:-$(git -C "$(dirname "$0")/.." remote get-url origin)}
    on_all_workers "set -e; [ -d $repo_dir ] || git clone -q $url $repo_dir; \
cd $repo_dir && git pull -q && python3 -m venv .venv && \
.venv/bin/pip install -q -e '.[data]' 'jax[tpu]'"
    ;;
  run)
    if [ "$#" -lt 2 ]; then
      echo "usage: $0 run TPU_NAME ZONE CONFIG WORKDIR [--config.x=y ...]" >&2
      exit 2
    fi
    config=$1
    workdir=$2
    shift 2
    extra=""
    if [ "$#" -gt 0 ]; then extra=$(printf ' %q' "$@"); fi
    on_all_workers "cd $repo_dir && .venv/bin/python -m ue_jax.main \
--config=$config --workdir=$workdir --distributed$extra"
    ;;
  *)
    echo "unknown action $action; use setup or run" >&2
    exit 2
    ;;
esac
