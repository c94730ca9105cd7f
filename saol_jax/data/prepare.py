"""Prepares every offline dataset: `python -m saol_jax.data.prepare [--data_dir DIR] [--source_dir DIR]`.

Writes Fashion-MNIST, the cluttered Fashion-MNIST localisation benchmark
(saol_jax.data.cluttered_fashion_mnist, 20,000 train / 5,000 test canvases
by default, about 30 s on 2 cores) and the target Fashion-MNIST benchmark,
where the class decides the location (saol_jax.data.target_fashion_mnist,
20,000 train / 5,000 validation / 5,000 test canvases by default) in tfds
format; datasets already prepared are left as they are.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from saol_jax.data import target_fashion_mnist as target
from saol_jax.data.cluttered_fashion_mnist import DEFAULT_SIZES, NAME, prepare_cluttered_fashion_mnist
from saol_jax.data.fashion_mnist import DEFAULT_SOURCE_DIR, prepare_fashion_mnist


def main(argv: list[str] | None = None) -> int:
    """Parses the flags, prepares the datasets and prints where they live."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data_dir", default=None, help="tfds data dir (default: tfds default, TFDS_DATA_DIR)")
    parser.add_argument("--source_dir", default=DEFAULT_SOURCE_DIR, help="directory holding the idx .gz files")
    parser.add_argument("--cluttered_train", type=int, default=DEFAULT_SIZES["train"],
                        help=f"{NAME} train examples (at most 60000)")
    parser.add_argument("--cluttered_test", type=int, default=DEFAULT_SIZES["test"],
                        help=f"{NAME} test examples (at most 10000)")
    for split, size in target.DEFAULT_SIZES.items():
        parser.add_argument(f"--target_{split}", type=int, default=size, help=f"{target.NAME} {split} examples")
    args = parser.parse_args(argv)
    sizes = {"train": args.cluttered_train, "test": args.cluttered_test}
    target_sizes = {split: getattr(args, f"target_{split}") for split in target.DEFAULT_SIZES}
    jobs = (
        ("fashion_mnist", lambda: prepare_fashion_mnist(args.data_dir, source_dir=args.source_dir)),
        (NAME, lambda: prepare_cluttered_fashion_mnist(args.data_dir, source_dir=args.source_dir, sizes=sizes)),
        (target.NAME, lambda: target.prepare_target_fashion_mnist(args.data_dir, source_dir=args.source_dir,
                                                                  sizes=target_sizes)),
    )
    for name, prepare in jobs:
        start = time.perf_counter()
        try:
            root = prepare()
        except (FileNotFoundError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(f"{name} ready in {os.path.join(root, name)} "
              f"({time.perf_counter() - start:.1f} s); use data_dir={root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
