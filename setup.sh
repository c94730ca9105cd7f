#!/usr/bin/env bash
# Installs saol_jax and its test tools into a virtualenv and prepares the
# offline default dataset (Fashion-MNIST from Debian's dataset-fashion-mnist,
# or tfds's own download where that package cannot be installed).
#
#   bash setup.sh                       # .venv with python3 (3.11 or newer)
#   PYTHON=python3.11 bash setup.sh     # another interpreter
#   VENV=/path bash setup.sh            # another virtualenv folder
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
FMNIST=/usr/share/datasets/fashion-mnist

say() { printf 'setup: %s\n' "$*"; }
fail() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

command -v "$PYTHON" >/dev/null || fail "$PYTHON not found; install Python 3.11+ and run: PYTHON=python3.11 bash setup.sh"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  fail "$("$PYTHON" -V 2>&1) is too old: saol_jax needs Python 3.11 or newer; run: PYTHON=python3.11 bash setup.sh"
fi

if [ ! -d "$FMNIST" ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    say "installing Fashion-MNIST from Debian's dataset-fashion-mnist package (apt-get)"
    apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null
  elif command -v apt-get >/dev/null && command -v sudo >/dev/null; then
    say "installing Fashion-MNIST from Debian's dataset-fashion-mnist package (sudo apt-get)"
    sudo apt-get update -qq && sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    say "no apt-get here: Fashion-MNIST will be downloaded once by tfds (needs internet)"
  fi
fi

if [ -x "$VENV/bin/python" ]; then
  say "reusing the virtualenv $VENV"
else
  say "creating the virtualenv $VENV with $("$PYTHON" -V 2>&1)"
  "$PYTHON" -m venv "$VENV"
fi
say "installing the Python packages (a few minutes and about 3.5 GB the first time, PyTorch for the tests included)"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -r requirements-dev.txt
"$VENV/bin/python" -m pip install -q --no-deps -e .

if [ -d "$FMNIST" ]; then
  say "preparing Fashion-MNIST as a tfds dataset from $FMNIST"
  "$VENV/bin/python" -m saol_jax.data.prepare
else
  say "downloading and preparing Fashion-MNIST with tfds"
  "$VENV/bin/python" -m saol_jax.data.prepare --dataset fashion_mnist || fail "tfds could not download Fashion-MNIST (no internet?); install Debian's dataset-fashion-mnist or copy its files to $FMNIST, then re-run"
fi
say "done: saol_jax is installed in $VENV"
