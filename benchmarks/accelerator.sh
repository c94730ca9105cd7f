#!/usr/bin/env bash
# One accelerator check in at most 10 minutes (about 6-7 expected on one H200), from the repo root,
# no install needed:
#
#   benchmarks/accelerator.sh [--tiny] [--dataset NAME] [--data_dir DIR] [--grain CARRY_DIR] [OUT_DIR]
#
# Parts, in this order, each time-bounded (they share one budget; a part cut short says so):
#   with --grain CARRY_DIR (what benchmarks/carry_for_gpu.sh wrote), first, without TensorFlow:
#   grain_prepare   python -m benchmarks.carried: the wheels of CARRY_DIR/wheels that this Python
#                   lacks, unpacked into a temporary folder put on PYTHONPATH; Fashion-MNIST and the
#                   target benchmark written as ArrayRecord from CARRY_DIR/fashion-mnist's idx files
#   grain_default   the default recipe (configs/fashion_mnist.py), dataset.backend=grain: wall time,
#                   time to the first evaluation, final top-1
#   grain_localisation  one run of configs/target_fashion_mnist.py (SAOL + SS + SD), likewise
#   input_pipeline  the grain train transforms, img/s with 0 and all-host-cores worker processes
#   then, in the time left
#   step_time       ResNet-50 224² bfloat16 batch 256 train-step img/s, GAP-FC vs SAOL+SS+SD with the
#                   recipes' default SS-2 form (paste), renorm, and the cheaper paste targets
#                   (paste_self, paste_quarter, paste_halfres); synthetic batch resident on the device
#   torch_peer      the same GAP-FC step in PyTorch (torchvision ResNet-50, bf16 autocast, channels-last),
#                   eager and torch.compile  [needs torch and torchvision]
#   memory          compiled train-step memory of ResNet-50 (bf16 and fp32, batch 64), GAP-FC vs
#                   SAOL+SS+SD with paste (the default), renorm and paste_self
#   input_pipeline  train transforms, img/s on 1 and all host cores  [tf.data half needs TensorFlow;
#                   with --grain the grain half alone]
#   end_to_end      the default recipe (configs/fashion_mnist.py) with tf.data: wall time and test top-1
#                   [needs TensorFlow; not run with --grain]
# then writes OUT_DIR/accelerator.json and OUT_DIR/accelerator.md (8 files in OUT_DIR at most, 9 with --grain;
# default benchmarks/results/accelerator/<UTC time>). Parts that need TensorFlow are skipped with
# a line saying so where it is not installed. --tiny: tiny settings that run on CPU in the tests
# (with --grain: the recipes' smoke runs and a small target benchmark). --dataset/--data_dir are
# passed to end_to_end. PYTHON selects the interpreter (default python3).
set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"
PYTHON="${PYTHON:-python3}"

TINY=0
OUT=""
GRAIN_CARRY=""
E2E_ARGS=()
while (($#)); do
  case "$1" in
    --tiny) TINY=1 ;;
    --dataset | --data_dir) E2E_ARGS+=("$1" "$2"); shift ;;
    --grain) GRAIN_CARRY="$(cd "$2" && pwd)"; shift ;;
    -h | --help) sed -n '2,32p' "$0"; exit 0 ;;
    *) OUT="$1" ;;
  esac
  shift
done
OUT="${OUT:-benchmarks/results/accelerator/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$OUT"
exec > >(tee "$OUT/accelerator.log") 2>&1

if ((TINY)); then
  BUDGET_S=240
  STEP_ARGS=(--tiny --reps 2 --steps 1)
  PEER_ARGS=(--tiny --modes eager --reps 2 --steps 1 --warmup 1)
  PIPELINE_ARGS=(--tiny)
  E2E_ARGS+=(--tiny)
  MEMORY_ARGS=(--tiny)
  TARGET_SIZES=(--target_train 256 --target_validation 64 --target_test 64)
  GRAIN_TRAIN_ARGS=(--tiny)
  GRAIN_PREPARE_CAP=300  # the whole Fashion-MNIST even so: minutes on a loaded 2-core VM
else
  # `saol_ss_sd` is the recipes' default form (renorm); `@paste` the form with the extra forward pass.
  # Expected on one H200 (16 host cores): step_time about 150 s (six compilations of about 13 s, then
  # 5 x 10 steps per rung), torch_peer about 150 s (torch.compile of the step), memory about 90 s
  # (six compilations): 6-7 minutes; the budget stops every part within 9.
  BUDGET_S=540
  STEP_ARGS=(--backbone resnet50 --image_size 224 --num_classes 1000 --width 256 --dtype bfloat16
             --batch 256 --reps 5 --steps 10
             --rungs gap,saol_ss_sd,saol_ss_sd@paste,saol_ss_sd@paste_self,saol_ss_sd@paste_quarter,saol_ss_sd@paste_halfres)
  PEER_ARGS=(--batch 256 --image_size 224 --num_classes 1000 --dtype bfloat16 --modes eager,compile
             --reps 5 --steps 10 --warmup 3)
  PIPELINE_ARGS=(--threads "1,$(nproc)")
  MEMORY_ARGS=(--settings resnet50_bf16,resnet50_fp32 --rungs gap,saol_ss_sd,saol_ss_sd@paste,saol_ss_sd@paste_self)
  TARGET_SIZES=()
  GRAIN_TRAIN_ARGS=()
  GRAIN_PREPARE_CAP=120
fi
if [[ -n "$GRAIN_CARRY" ]]; then
  # the grain parts first, the others in what is left: 9.5 minutes in all on the accelerator
  BUDGET_S=$((BUDGET_S + GRAIN_PREPARE_CAP - 10))
  ((TINY)) || BUDGET_S=$((BUDGET_S > 570 ? 570 : BUDGET_S))
  PIPELINE_ARGS+=(--backends grain --workers "0,$(nproc)")
fi
START=$SECONDS
STATUS=()

# run_part NAME CAP_S COMMAND...: runs COMMAND for at most min(CAP_S, time left) seconds.
run_part() {
  local name="$1" cap="$2"
  shift 2
  local left=$((BUDGET_S - (SECONDS - START)))
  local limit=$((cap < left ? cap : left))
  if ((limit < 10)); then
    skip_part "$name" "no time left in the ${BUDGET_S} s budget"
    return
  fi
  echo "== $name (at most ${limit} s): $*"
  local t0=$SECONDS
  timeout -k 10 "$limit" "$@"
  local rc=$?
  ((rc == 124 || rc == 137)) && echo "== $name: stopped at its ${limit} s limit"
  STATUS+=("$name=$rc:$((SECONDS - t0))")
}

skip_part() {
  echo "== $1: skipped: $2"
  STATUS+=("$1=skipped:$2")
}

echo "== accelerator check in $OUT, budget ${BUDGET_S} s, $("$PYTHON" --version 2>&1), $(nproc) host cores"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader

if "$PYTHON" -c 'import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in ("tensorflow", "tensorflow_datasets")))'; then
  HAS_TF=1
  STEP_CAP=200
  MEMORY_CAP=100  # leaves time for the input pipeline and the end-to-end run
else
  HAS_TF=0
  STEP_CAP=300
  MEMORY_CAP=$BUDGET_S
fi

if [[ -n "$GRAIN_CARRY" ]]; then
  GRAIN_TMP="$(mktemp -d)"
  trap 'rm -rf "$GRAIN_TMP"' EXIT
  run_part grain_prepare "$GRAIN_PREPARE_CAP" "$PYTHON" -m benchmarks.carried "$GRAIN_CARRY" "$GRAIN_TMP/site" "$GRAIN_TMP/data" \
    "${TARGET_SIZES[@]}"
  export PYTHONPATH="$GRAIN_TMP/site:$PYTHONPATH"
  run_part grain_default 180 "$PYTHON" -m benchmarks.end_to_end --backend grain --data_dir "$GRAIN_TMP/data" \
    "${GRAIN_TRAIN_ARGS[@]}" --out "$OUT/grain_default.json"
  run_part grain_localisation 150 "$PYTHON" -m benchmarks.end_to_end --backend grain \
    --recipe configs/target_fashion_mnist.py --data_dir "$GRAIN_TMP/data" "${GRAIN_TRAIN_ARGS[@]}" \
    --out "$OUT/grain_localisation.json"
  run_part input_pipeline 60 "$PYTHON" -m benchmarks.input_pipeline "${PIPELINE_ARGS[@]}" --out "$OUT/input_pipeline.json"
  skip_part end_to_end "--grain: the grain runs above instead"
  STEP_CAP=120
  MEMORY_CAP=120
fi
run_part step_time "$STEP_CAP" "$PYTHON" -m benchmarks.step_time "${STEP_ARGS[@]}" --out "$OUT/step_time.json"
if "$PYTHON" -c 'import torch, torchvision' >/dev/null 2>&1; then
  run_part torch_peer 200 "$PYTHON" -m benchmarks.torch_peer "${PEER_ARGS[@]}" --out "$OUT/torch_peer.json"
else
  skip_part torch_peer "torch / torchvision not importable"
fi
run_part memory "$MEMORY_CAP" "$PYTHON" -m benchmarks.memory "${MEMORY_ARGS[@]}" --out "$OUT/memory.json"
if [[ -z "$GRAIN_CARRY" ]]; then
  if ((HAS_TF)); then
    run_part input_pipeline 60 "$PYTHON" -m benchmarks.input_pipeline "${PIPELINE_ARGS[@]}" --out "$OUT/input_pipeline.json"
    run_part end_to_end 120 "$PYTHON" -m benchmarks.end_to_end "${E2E_ARGS[@]}" --out "$OUT/end_to_end.json"
  else
    skip_part input_pipeline "tensorflow / tensorflow-datasets not installed"
    skip_part end_to_end "tensorflow / tensorflow-datasets not installed"
  fi
fi

echo "== summary after $((SECONDS - START)) s"
"$PYTHON" -m benchmarks.accelerator "$OUT" "${STATUS[@]}"
