#!/usr/bin/env bash
# Fills a folder with what `benchmarks/accelerator.sh --grain DIR` needs to train on a GPU machine
# whose image has jax, flax, optax, orbax, numpy, Pillow and OpenCV, but no TensorFlow stack and
# no network (run it here, where PyPI can be reached):
#
#   benchmarks/carry_for_gpu.sh [--python 3.12] [--source_dir DIR] [OUT_DIR]
#
#   OUT_DIR/wheels/         grain, array-record, ml-collections, tensorflow-datasets, tensorboard (the
#                           trainer's event writer) and the dependencies such an image lacks, each
#                           pinned to the version the tests run with, for CPython --python on
#                           x86-64 Linux, without their own dependencies (the list is WHEELS below)
#   OUT_DIR/fashion-mnist/  the four raw Fashion-MNIST idx files (from --source_dir, default the
#                           Debian package's folder); the machine prepares the datasets from them
#
# OUT_DIR defaults to benchmarks/carry (ignored by git; name it in the device run's `carry`).
# Prints the MiB of each part and the total: a device run carries at most 64 MiB with the
# working tree. PYTHON selects the interpreter whose pip downloads (default python3).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
PY_VERSION=3.12
SOURCE_DIR=/usr/share/datasets/fashion-mnist
OUT=""
while (($#)); do
  case "$1" in
    --python) PY_VERSION="$2"; shift ;;
    --source_dir) SOURCE_DIR="$2"; shift ;;
    -h | --help) sed -n '2,19p' "$0"; exit 0 ;;
    *) OUT="$1" ;;
  esac
  shift
done
OUT="${OUT:-$ROOT/benchmarks/carry}"

# Binary or pure-python wheels on PyPI.
WHEELS=(
  grain==0.2.18 array-record==0.8.6 ml-collections==1.1.0 tensorflow-datasets==4.9.10
  tensorboard==2.21.0 dm-tree==0.1.10 wrapt==2.5.2 attrs==26.1.0 immutabledict==4.3.1
  tensorflow-metadata==1.21.0 googleapis-common-protos==1.76.0 toml==0.10.2 tqdm==4.70.1
  cloudpickle==3.1.3 portpicker==1.6.0 six==1.17.0 termcolor==3.3.0 importlib-resources==7.1.0 zipp==4.1.2
  psutil==7.2.2
)
# Source distributions only: built into (pure-python) wheels here.
SDISTS=(promise==2.3)

mkdir -p "$OUT/wheels" "$OUT/fashion-mnist"
ABI="cp${PY_VERSION/./}"
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --dest "$OUT/wheels" \
  --python-version "$PY_VERSION" --implementation cp --abi "$ABI" --abi abi3 --abi none \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_28_x86_64 --platform any "${WHEELS[@]}"
"$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$OUT/wheels" "${SDISTS[@]}"

for f in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz; do
  if [[ ! -f "$SOURCE_DIR/$f" ]]; then
    echo "error: $SOURCE_DIR/$f not found (apt-get install dataset-fashion-mnist, or --source_dir DIR)" >&2
    exit 1
  fi
  cp "$SOURCE_DIR/$f" "$OUT/fashion-mnist/"
done

mib() { du -sb "$@" | awk '{s += $1} END {printf "%.1f", s / 1048576}'; }
echo "wheels: $(ls "$OUT/wheels" | wc -l) files, $(mib "$OUT/wheels") MiB"
echo "fashion-mnist idx files: $(mib "$OUT/fashion-mnist") MiB"
echo "total to carry: $(mib "$OUT/wheels" "$OUT/fashion-mnist") MiB in $OUT"
