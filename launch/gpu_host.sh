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
# Before training, it stops with the install command if jax sees no GPU (a jax without CUDA
# would train on the CPU): PYTHON -m pip install -U "jax[cuda12]" in the range of requirements.txt.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
USAGE="launch/gpu_host.sh --config CONFIG --workdir DIR [options] [-- TRAIN_FLAGS...]"
HELP="launch/gpu_host.sh --help"
CONFIG="" WORKDIR="" DATA_DIR="" GPUS="" PYTHON=""
# shellcheck source=common.sh
source "$REPO/launch/common.sh"
parse_options "--config --workdir --data_dir --gpus --python" "--dry-run" "$@"

[ -n "$CONFIG" ] || die "missing --config (the recipe, e.g. configs/cifar_pyramidnet200.py:hw=gpu8)"
[ -n "$WORKDIR" ] || die "missing --workdir (the run directory)"
[[ -z "$GPUS" || "$GPUS" =~ ^[0-9]+(,[0-9]+)*$ ]] || die "--gpus must look like 0,1,2,3, got '$GPUS'"
[ -n "$PYTHON" ] || PYTHON=$(default_python "$REPO")

train_command "$PYTHON" --distributed=off
[ -z "$GPUS" ] || TRAIN_COMMAND=(env "CUDA_VISIBLE_DEVICES=$GPUS" "${TRAIN_COMMAND[@]}")

run cd "$REPO"
if [ "$DRY_RUN" != 1 ]; then
  if command -v nvidia-smi >/dev/null; then
    echo "GPUs on this host: $(nvidia-smi -L | wc -l)${GPUS:+ (using $GPUS)}" >&2
  fi
  # A jax without CUDA falls back to the CPU with a mere warning: stop here instead.
  require_jax_gpu "$PYTHON" "$GPUS"
fi
# exec: SIGTERM (pre-emption) reaches the trainer, which saves a checkpoint before exiting.
run_exec "${TRAIN_COMMAND[@]}"
