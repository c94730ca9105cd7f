# shellcheck shell=bash
# Helpers shared by the launch scripts (sourced, not run): the option parser, the help text,
# errors, dry-run printing and the trainer's command line.
#
# Before sourcing, a script sets USAGE (its one-line usage) and HELP (the command that prints its
# help), both for error messages, and the defaults of its options; then it calls
#   parse_options "VALUE_OPTIONS" "FLAG_OPTIONS" "$@"
# which stores `--data_dir DIR` (or `--data_dir=DIR`) in DATA_DIR, `--dry-run` as DRY_RUN=1,
# and the words after `--` in TRAIN_FLAGS. DRY_RUN=1 in the environment also means a dry run.
# shellcheck disable=SC2154  # USAGE, HELP, CONFIG, WORKDIR, DATA_DIR, REPO: set by the sourcing script

DRY_RUN=${DRY_RUN:-0}
TRAIN_FLAGS=()

# The script's header comment (from line 2 to the first line that is not a comment, or an
# #SBATCH directive), without the comment marks.
usage() {
  awk 'NR == 1 { next } !/^#/ || /^#SBATCH/ { exit } { sub(/^# ?/, ""); print }' "$0"
}

die() {
  echo "error: $*" >&2
  echo "usage: $USAGE" >&2
  echo "($HELP for every option)" >&2
  exit 2
}

# Fails unless option $1 has a value "$2" that is not itself an option.
need_value() {
  if [ -z "${2:-}" ] || [ "${2#--}" != "$2" ]; then die "$1 needs a value"; fi
}

# The variable an option is stored in: --data_dir -> DATA_DIR, --dry-run -> DRY_RUN.
option_variable() {
  local name=${1#--}
  name=${name//-/_}
  echo "${name^^}"
}

# Parses "$@" (from the third word on) against two space-separated lists of options: those
# that take a value and those that are flags (set to 1). -h/--help prints the help and exits.
parse_options() {
  local values=" $1 " flags=" $2 "
  shift 2
  while [ $# -gt 0 ]; do
    case "$1" in
      --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}"; continue ;;
      -h | --help) usage; exit 0 ;;
      --) shift; TRAIN_FLAGS=("$@"); break ;;
    esac
    if [[ $values == *" $1 "* ]]; then
      need_value "$@"
      printf -v "$(option_variable "$1")" '%s' "$2"
      shift 2
    elif [[ $flags == *" $1 "* ]]; then
      printf -v "$(option_variable "$1")" '%s' 1
      shift
    else
      die "unknown argument '$1'"
    fi
  done
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

# Replaces this shell by a command, so that signals (SIGTERM on pre-emption) reach it; prints it
# in dry-run mode.
run_exec() {
  if [ "$DRY_RUN" = 1 ]; then quote "$@"; else exec "$@"; fi
}

# The repository's .venv interpreter if there is one, else python3.
default_python() {
  if [ -x "$1/.venv/bin/python" ]; then echo "$1/.venv/bin/python"; else echo python3; fi
}

# Sets TRAIN_COMMAND to: PYTHON -m saol_jax.train --config CONFIG --workdir WORKDIR EXTRA...
# [--config.dataset.data_dir=DATA_DIR] TRAIN_FLAGS...
train_command() {
  TRAIN_COMMAND=("$1" -m saol_jax.train --config "$CONFIG" --workdir "$WORKDIR" "${@:2}")
  [ -z "$DATA_DIR" ] || TRAIN_COMMAND+=("--config.dataset.data_dir=$DATA_DIR")
  TRAIN_COMMAND+=(${TRAIN_FLAGS[@]+"${TRAIN_FLAGS[@]}"})
}

# The jax CUDA requirement matching requirements.txt's jax range: jax[cuda12]>=A,<B.
jax_cuda_requirement() {
  local range
  range=$(sed -n 's/^jax\[[a-z0-9]*\]\([^ #]*\).*/\1/p' "$1/requirements.txt" 2>/dev/null | head -n 1)
  echo "jax[cuda12]$range"
}

# Stops with the fix unless jax under interpreter $1 (with CUDA_VISIBLE_DEVICES=$2 if given)
# sees a GPU: a CPU-only jax (the default install) would otherwise train on the CPU, days
# slower, after no more than a warning.
require_jax_gpu() {
  local python=$1 backend fix
  fix=$(quote "$python" -m pip install -U "$(jax_cuda_requirement "$REPO")")
  if ! backend=$(${2:+env "CUDA_VISIBLE_DEVICES=$2"} "$python" -c 'import jax; print(jax.default_backend())'); then
    echo "error: could not import jax with $python (see above): run \`bash setup.sh\` or pass" \
      "--python, then install jax's CUDA build: $fix" >&2
    exit 1
  fi
  backend=$(tail -n 1 <<<"$backend")
  if [ "$backend" != gpu ]; then
    echo "error: jax sees no GPU (its backend is '$backend'): this would train on the CPU." >&2
    echo "Install jax's CUDA build into the interpreter's environment:" >&2
    echo "  $fix" >&2
    echo "then check that $(quote "$python" -c 'import jax; print(jax.devices())') lists the GPUs" \
      "(nvidia-smi must list them too)." >&2
    exit 1
  fi
}
