#!/usr/bin/env bash
# Installs saol_jax and its test tools into a virtualenv and prepares the
# offline default dataset (Fashion-MNIST from Debian's dataset-fashion-mnist).
#
#   bash setup.sh                 # .venv with python3
#   VENV=/path PYTHON=python3.12 bash setup.sh
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
FMNIST=/usr/share/datasets/fashion-mnist

if [ ! -d "$FMNIST" ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null
  elif command -v apt-get >/dev/null && command -v sudo >/dev/null; then
    sudo apt-get update -qq && sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    echo "note: $FMNIST is missing and apt-get is unavailable; the default recipe needs" \
         "it offline (or internet access for tfds's own download)" >&2
  fi
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -r requirements-dev.txt
"$VENV/bin/python" -m pip install -q --no-deps -e .
if [ -d "$FMNIST" ]; then
  "$VENV/bin/python" -m saol_jax.data.prepare
fi
echo "saol_jax installed in $VENV"
