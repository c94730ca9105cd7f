#!/usr/bin/env bash
# Trains on every worker of a Cloud TPU VM slice (e.g. v4-32: 4 hosts, 16 chips) with gcloud.
#
# Usage (from anywhere; the repository is the one holding this script):
#   launch/tpu_pod.sh --name NAME --zone ZONE --config CONFIG --workdir gs://BUCKET/DIR [options] [-- TRAIN_FLAGS...]
#
# Required:
#   --name NAME          TPU VM name (the `create` step creates it)
#   --zone ZONE          its zone, e.g. us-central2-b
#   --config CONFIG      recipe and options, e.g. configs/imagenet_resnet.py:hw=tpu_v4_32
#   --workdir DIR        run directory shared by all workers: a gs:// path (or a shared mount);
#                        checkpoints, metrics and config land there, and a re-run resumes from it
# Options:
#   --steps LIST         comma-separated, run in this order: create,copy,setup,train,delete
#                        (default: copy,setup,train; add `create` for a new slice)
#   --accelerator TYPE   accelerator type for `create` (default: v4-32; also e.g. v5litepod-16, v6e-16)
#   --version VERSION    TPU VM software version for `create` (default: tpu-ubuntu2204-base, for v4;
#                        v5e: v2-alpha-tpuv5-lite, v6e: v2-alpha-tpuv6e)
#   --spot               `create` a Spot (pre-emptible) slice
#   --project PROJECT    gcloud project (default: gcloud's configured one)
#   --data_dir DIR       tfds data_dir every worker can read, e.g. gs://BUCKET/tensorflow_datasets
#                        (passed as --config.dataset.data_dir)
#   --dry-run            print the commands instead of running them (or DRY_RUN=1)
#   -h, --help           this text
#   -- TRAIN_FLAGS...    passed on to `python -m saol_jax.train`, e.g. --config.num_epochs=90
#
# Steps:
#   create  gcloud compute tpus tpu-vm create NAME --zone ZONE --accelerator-type TYPE --version VERSION
#   copy    packs this repository (without .git, .venv, workdirs) and unpacks it to ~/saol_jax on all workers
#   setup   on all workers: a Python 3.11 venv (through uv) with requirements.txt, jax[tpu] and saol_jax
#   train   on all workers at once, in the background (nohup): python -m saol_jax.train --config CONFIG
#           --workdir DIR --distributed=on (jax reads the slice's layout from the TPU metadata; every
#           worker runs the same command). It returns once started: a dropped SSH connection does not
#           stop training. Each worker logs to ~/saol_jax_train.log (appended to) and keeps the trainer's
#           pid in ~/saol_jax_train.pid; while that trainer runs, copy, setup and train refuse to start.
#   delete  gcloud compute tpus tpu-vm delete NAME --zone ZONE --quiet (not with train, which does not
#           wait for training to end: delete in a later run)
#
# Follow the log of worker 0 (it prints the commands for this slice after `train`):
#   gcloud compute tpus tpu-vm ssh NAME --zone ZONE --worker=0 --command 'tail -n 100 -F ~/saol_jax_train.log'
# Stop training (every worker saves a checkpoint, then exits):
#   gcloud compute tpus tpu-vm ssh NAME --zone ZONE --worker=all --command 'kill -TERM $(cat ~/saol_jax_train.pid)'
# After a pre-emption (Spot slice), a stop or a crash: re-run the same command (with `create` if
# the slice was deleted); training resumes from the newest checkpoint in DIR.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
USAGE="launch/tpu_pod.sh --name NAME --zone ZONE --config CONFIG --workdir DIR [options] [-- TRAIN_FLAGS...]"
HELP="launch/tpu_pod.sh --help"
# shellcheck disable=SC2088  # the tilde is expanded by the workers' shells
REMOTE_DIR='~/saol_jax'
# Outside REMOTE_DIR, which `copy` replaces.
# shellcheck disable=SC2088
REMOTE_LOG='~/saol_jax_train.log' REMOTE_PID='~/saol_jax_train.pid'
ARCHIVE="${TMPDIR:-/tmp}/saol_jax_src.tar.gz"
NAME="" ZONE="" CONFIG="" WORKDIR="" PROJECT="" DATA_DIR=""
STEPS="copy,setup,train" ACCELERATOR="v4-32" VERSION="tpu-ubuntu2204-base" SPOT=0
# shellcheck source=common.sh
source "$REPO/launch/common.sh"
parse_options "--name --zone --config --workdir --steps --accelerator --version --project --data_dir" \
  "--spot --dry-run" "$@"

[ -n "$NAME" ] || die "missing --name (the TPU VM name)"
[ -n "$ZONE" ] || die "missing --zone (the TPU VM's zone, e.g. us-central2-b)"
IFS=',' read -r -a STEP_LIST <<<"$STEPS"
for step in "${STEP_LIST[@]}"; do
  case "$step" in
    create | copy | setup | delete) ;;
    train)
      [ -n "$CONFIG" ] || die "missing --config (the recipe, e.g. configs/imagenet_resnet.py:hw=tpu_v4_32)"
      [ -n "$WORKDIR" ] || die "missing --workdir (a gs:// run directory shared by all workers)"
      case "$WORKDIR" in
        gs://*) ;;
        *) echo "warning: --workdir $WORKDIR is not a gs:// path; every worker must see the same directory" >&2 ;;
      esac
      ;;
    *) die "unknown step '$step' in --steps (valid: create,copy,setup,train,delete)" ;;
  esac
done
if [[ ",$STEPS," == *,train,* && ",$STEPS," == *,delete,* ]]; then
  die "--steps has both train and delete: train returns once training has started, so delete would" \
    "stop it at once; delete the slice later with --steps delete"
fi

GCLOUD_OPTS=(--zone="$ZONE")
[ -z "$PROJECT" ] || GCLOUD_OPTS+=(--project="$PROJECT")

on_all_workers() {
  run gcloud compute tpus tpu-vm ssh "$NAME" "${GCLOUD_OPTS[@]}" --worker=all --command "$1"
}

# A worker's shell command that fails while the trainer started by `train` still runs there.
NOT_TRAINING="if pid=\$(cat $REMOTE_PID 2>/dev/null) && ps -o args= -p \"\$pid\" | grep -qF saol_jax.train; then\
 echo \"\$(hostname): saol_jax.train is running (pid \$pid, log $REMOTE_LOG): stop it first\" >&2; exit 1; fi"

for step in "${STEP_LIST[@]}"; do
  case "$step" in
    create)
      args=(gcloud compute tpus tpu-vm create "$NAME" "${GCLOUD_OPTS[@]}"
        --accelerator-type="$ACCELERATOR" --version="$VERSION")
      [ "$SPOT" = 0 ] || args+=(--spot)
      run "${args[@]}"
      ;;
    copy)
      run tar -czf "$ARCHIVE" --exclude=./.git --exclude=./.venv --exclude=./workdirs \
        --exclude=__pycache__ --exclude=.pytest_cache -C "$REPO" .
      run gcloud compute tpus tpu-vm scp "$ARCHIVE" "$NAME:saol_jax_src.tar.gz" "${GCLOUD_OPTS[@]}" --worker=all
      on_all_workers "$NOT_TRAINING; rm -rf $REMOTE_DIR && mkdir -p $REMOTE_DIR && tar -xzf ~/saol_jax_src.tar.gz -C $REMOTE_DIR"
      ;;
    setup)
      on_all_workers "$NOT_TRAINING; cd $REMOTE_DIR && (command -v uv >/dev/null || curl -LsSf https://astral.sh/uv/install.sh | sh) && export PATH=\$HOME/.local/bin:\$PATH && uv venv --python 3.11 .venv && uv pip install --python .venv/bin/python -r requirements.txt \"jax[tpu]>=0.10,<0.13\" && uv pip install --python .venv/bin/python --no-deps -e ."
      ;;
    train)
      train_command .venv/bin/python --distributed=on
      # nohup, output to a file, stdin from /dev/null: the trainer outlives the SSH session.
      on_all_workers "$NOT_TRAINING; cd $REMOTE_DIR || exit 1;\
 echo \"=== \$(date -u): starting on \$(hostname)\" >>$REMOTE_LOG;\
 nohup $(quote "${TRAIN_COMMAND[@]}") >>$REMOTE_LOG 2>&1 </dev/null & echo \$! >$REMOTE_PID;\
 echo \"\$(hostname): training in the background (pid \$!), log $REMOTE_LOG\""
      ssh_worker=(gcloud compute tpus tpu-vm ssh "$NAME" "${GCLOUD_OPTS[@]}")
      {
        echo "Training runs in the background on every worker: closing this terminal does not stop it."
        echo "Follow worker 0's log:"
        echo "  $(quote "${ssh_worker[@]}" --worker=0 --command "tail -n 100 -F $REMOTE_LOG")"
        echo "Stop it (every worker saves a checkpoint, then exits):"
        echo "  $(quote "${ssh_worker[@]}" --worker=all --command "kill -TERM \$(cat $REMOTE_PID)")"
      } >&2
      ;;
    delete)
      run gcloud compute tpus tpu-vm delete "$NAME" "${GCLOUD_OPTS[@]}" --quiet
      ;;
  esac
done
