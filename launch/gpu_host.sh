#!/usr/bin/env bash
# Trains on one host with all its local GPUs in one process (jax shards each batch over them).
#
# Usage (from anywhere; the repository is the one holding this script):
#   launch/gpu_host.sh --config CONFIG --workdir DIR [options] [-- TRAIN_FLAGS...]
#
# Required:
#   --config CONFIG      recipe and options, e.g. configs/cifar_pyramidnet200.py:hw=gpu8
#   --workdir DIR        run directory (local path or gs://); a re-run resumes from it
# Options:
#   --data_dir DIR       tfds data_dir (passed as --config.dataset.data_dir; default: tfds's own)
#   --gpus LIST          only these GPUs, e.g. 0,1,2,3 (sets CUDA_VISIBLE_DEVICES; default: all)
#   --python PYTHON      interpreter with saol_jax's requirements and jax[cuda12]
#                        (default: .venv/bin/python of the repository if present, else python3)
#   --dry-run            print the commands instead of running them (or DRY_RUN=1)
#   -h, --help           this text
#   -- TRAIN_FLAGS...    passed on to `python -m saol_jax.train`, e.g. --config.num_epochs=10
#
# Runs, from the repository root:
#   [env CUDA_VISIBLE_DEVICES=LIST] PYTHON -m saol_jax.train --config CONFIG --workdir DIR --distributed=off
# The global batch (config `batch_size`, or `hw=gpu1|gpu8` in CONFIG) must divide by the number
# of GPUs. SIGTERM (pre-emption, `kill PID`) saves a checkpoint first; the same command resumes.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DRY_RUN=${DRY_RUN:-0}
CONFIG="" WORKDIR="" DATA_DIR="" GPUS="" PYTHON=""
TRAIN_FLAGS=()

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; }
die() {
  echo "error: $*" >&2
  echo "usage: launch/gpu_host.sh --config CONFIG --workdir DIR [options] [-- TRAIN_FLAGS...]" >&2
  echo "(launch/gpu_host.sh --help for every option)" >&2
  exit 2
}
need_value() {
  if [ -z "${2:-}" ] || [ "${2#--}" != "$2" ]; then die "$1 needs a value"; fi
}
# Words as one shell command line: each word bare if safe, else in single quotes.
quote() {
  local out="" word
  for word in "$@"; do
    if [[ -n $word && $word =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
      out+="$word "
    else
      out+="'${word//\'/\'\\\'\'}' "
    fi
  done
  echo "${out% }"
}
# Runs a command, or prints it (one line, quoted for a shell) in dry-run mode.
run() {
  if [ "$DRY_RUN" = 1 ]; then quote "$@"; else "$@"; fi
}

while [ $# -gt 0 ]; do
  case "$1" in
    --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}"; continue ;;
    --config) need_value "$@"; CONFIG=$2; shift 2 ;;
    --workdir) need_value "$@"; WORKDIR=$2; shift 2 ;;
    --data_dir) need_value "$@"; DATA_DIR=$2; shift 2 ;;
    --gpus) need_value "$@"; GPUS=$2; shift 2 ;;
    --python) need_value "$@"; PYTHON=$2; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; TRAIN_FLAGS=("$@"); break ;;
    *) die "unknown argument '$1'" ;;
  esac
done

[ -n "$CONFIG" ] || die "missing --config (the recipe, e.g. configs/cifar_pyramidnet200.py:hw=gpu8)"
[ -n "$WORKDIR" ] || die "missing --workdir (the run directory)"
[[ -z "$GPUS" || "$GPUS" =~ ^[0-9]+(,[0-9]+)*$ ]] || die "--gpus must look like 0,1,2,3, got '$GPUS'"
if [ -z "$PYTHON" ]; then
  if [ -x "$REPO/.venv/bin/python" ]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi

command=("$PYTHON" -m saol_jax.train --config "$CONFIG" --workdir "$WORKDIR" --distributed=off)
[ -z "$DATA_DIR" ] || command+=("--config.dataset.data_dir=$DATA_DIR")
command+=(${TRAIN_FLAGS[@]+"${TRAIN_FLAGS[@]}"})
[ -z "$GPUS" ] || command=(env "CUDA_VISIBLE_DEVICES=$GPUS" "${command[@]}")

run cd "$REPO"
if [ "$DRY_RUN" != 1 ] && command -v nvidia-smi >/dev/null; then
  echo "GPUs on this host: $(nvidia-smi -L | wc -l)${GPUS:+ (using $GPUS)}" >&2
fi
# exec: SIGTERM (pre-emption) reaches the trainer, which saves a checkpoint before exiting.
if [ "$DRY_RUN" = 1 ]; then quote "${command[@]}"; else exec "${command[@]}"; fi
