"""Sets up the grain path from carried files on a machine without network: `accelerator.sh --grain`'s first part.

    python -m benchmarks.carried CARRY_DIR SITE_DIR DATA_DIR [--target_SPLIT N ...]

Unpacks each wheel of CARRY_DIR/wheels whose distribution this Python does
not have into SITE_DIR (a wheel is a zip of importable files; SITE_DIR then
goes on PYTHONPATH), then runs `python -m saol_jax.data.prepare` with SITE_DIR
on its path to write Fashion-MNIST and the target benchmark into DATA_DIR
from CARRY_DIR/fashion-mnist's idx files (ArrayRecord where TensorFlow is
absent). Further arguments go to prepare (e.g. smaller target splits).
"""

from __future__ import annotations

import glob
import importlib.metadata
import os
import subprocess
import sys
import zipfile

OFFLINE = "fashion_mnist,target_fashion_mnist"


def distribution(wheel: str) -> str:
    """'tensorflow_datasets-4.9.10-py3-none-any.whl' -> 'tensorflow_datasets'."""
    return os.path.basename(wheel).split("-")[0]


def unpack_missing(wheels_dir: str, site: str) -> list[str]:
    """Unpacks the wheels whose distributions are not installed into `site`; returns their names."""
    unpacked = []
    for wheel in sorted(glob.glob(os.path.join(wheels_dir, "*.whl"))):
        name = distribution(wheel)
        try:
            print(f"{name}: {importlib.metadata.version(name)} installed, carried wheel not used")
        except importlib.metadata.PackageNotFoundError:
            with zipfile.ZipFile(wheel) as archive:
                archive.extractall(site)
            unpacked.append(name)
            print(f"{name}: unpacked from {os.path.basename(wheel)}")
    return unpacked


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    carry, site, data_dir, *prepare_args = args
    os.makedirs(site, exist_ok=True)
    unpack_missing(os.path.join(carry, "wheels"), site)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (site, os.environ.get("PYTHONPATH")) if p))
    return subprocess.run(
        [sys.executable, "-m", "saol_jax.data.prepare", "--data_dir", data_dir,
         "--source_dir", os.path.join(carry, "fashion-mnist"), "--only", OFFLINE, *prepare_args],
        env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
