"""Prepares Fashion-MNIST offline: `python -m saol_jax.data.prepare [--data_dir DIR] [--source_dir DIR]`."""

from __future__ import annotations

import argparse
import os
import sys
import time

from saol_jax.data.fashion_mnist import DEFAULT_SOURCE_DIR, prepare_fashion_mnist


def main(argv: list[str] | None = None) -> int:
    """Parses the flags, prepares the dataset and prints where it lives."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data_dir", default=None, help="tfds data dir (default: tfds default, TFDS_DATA_DIR)")
    parser.add_argument("--source_dir", default=DEFAULT_SOURCE_DIR, help="directory holding the idx .gz files")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        root = prepare_fashion_mnist(args.data_dir, source_dir=args.source_dir)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"fashion_mnist ready in {os.path.join(root, 'fashion_mnist')} "
          f"({time.perf_counter() - start:.1f} s); use data_dir={root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
