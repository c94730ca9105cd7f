#!/usr/bin/env bash
# A study (saol_jax.studies.ablate) on a lent GPU machine without TensorFlow or network, from what
# benchmarks/carry_for_gpu.sh carried, inside a time budget; from the repo root:
#
#   launch/carried_study.sh CARRY_DIR OUT_DIR BUDGET_S --config RECIPE --workdir DIR --results DIR [ABLATE_FLAG...]
#
# 1. the carried wheels this Python lacks are unpacked and the target benchmark is written as
#    ArrayRecord from the carried idx files (python -m benchmarks.carried)
# 2. the study trains with the grain input (`--config.dataset.backend=grain`, the prepared data_dir
#    added to the flags) until BUDGET_S from the start; then every run gets SIGTERM (each saves and exits)
# 3. if stopped early, the study is read back (nothing trained) for the largest seed count every rung
#    finished, so that the result files hold balanced seeds
# 4. OUT_DIR/results.tar.gz holds the --results folder, OUT_DIR/logs.tar.gz each run's log, metrics and
#    config (no checkpoints), OUT_DIR/study.log this script's output.
# PYTHON selects the interpreter (default python3).
#
# Sizing, from the ConvNeXt ladder on one H100 (16 host cores): the benchmark is written in about 45 s;
# with `--parallel 20` five of the 20 runs ran out of GPU memory (XLA_PYTHON_CLIENT_PREALLOCATE=false,
# each process growing on its own), and the same runs fitted at `--parallel 5` (about 130 s a run).
# The read-back of step 3 computes each attention run's compare_heads.json from the data; the data_dir a
# run recorded must exist then, which holds within one call of this script.
set -u -o pipefail

if (($# < 4)); then
  sed -n '2,15p' "$0"
  exit 2
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
CARRY="$(cd "$1" && pwd)"
OUT="$2"
BUDGET_S="$3"
shift 3
ABLATE_ARGS=("$@")
PYTHON="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3
mkdir -p "$OUT"
exec > >(tee "$OUT/study.log") 2>&1
START=$SECONDS

# flag_value NAME: the value of --NAME in the ablate flags (either --NAME VALUE or --NAME=VALUE).
flag_value() {
  local i
  for ((i = 0; i < ${#ABLATE_ARGS[@]}; i++)); do
    case "${ABLATE_ARGS[i]}" in
      "--$1") echo "${ABLATE_ARGS[i + 1]}"; return ;;
      "--$1="*) echo "${ABLATE_ARGS[i]#--$1=}"; return ;;
    esac
  done
}
WORKDIR="$(flag_value workdir)"
RESULTS="$(flag_value results)"
if [[ -z "$WORKDIR" || -z "$RESULTS" ]]; then
  echo "error: name --workdir and --results among the ablate flags (their files are packed into $OUT)"
  exit 2
fi

echo "== $(date -u +%FT%TZ) carried study, budget ${BUDGET_S} s, $("$PYTHON" --version 2>&1), $(nproc) host cores"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
"$PYTHON" -m benchmarks.carried "$CARRY" "$TMP/site" "$TMP/data" --only target_fashion_mnist || exit 1
export PYTHONPATH="$ROOT:$TMP/site${PYTHONPATH:+:$PYTHONPATH}"
GRAIN=(--config.dataset.backend=grain "--config.dataset.data_dir=$TMP/data")
echo "== data ready after $((SECONDS - START)) s"

LEFT=$((BUDGET_S - (SECONDS - START)))
timeout -k 60 "$LEFT" "$PYTHON" -m saol_jax.studies.ablate "${ABLATE_ARGS[@]}" "${GRAIN[@]}"
RC=$?
echo "== study ended with status $RC after $((SECONDS - START)) s"
if ((RC != 0)); then
  SEEDS="$("$PYTHON" -m saol_jax.studies.finished "$WORKDIR")"
  echo "== reading back the first $SEEDS seed(s) of every rung"
  if ((SEEDS > 0)); then
    "$PYTHON" -m saol_jax.studies.ablate "${ABLATE_ARGS[@]}" "${GRAIN[@]}" --seeds "$SEEDS" --parallel 1
  fi
fi
tar -czf "$OUT/results.tar.gz" "$RESULTS"
find "$WORKDIR" \( -name '*.log' -o -name metrics.jsonl -o -name config.json -o -name compare_heads.json \
  -o -name 'ablation.*' \) -print0 | tar -czf "$OUT/logs.tar.gz" --null -T -
echo "== packed after $((SECONDS - START)) s"
