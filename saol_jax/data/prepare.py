"""Prepares datasets: `python -m saol_jax.data.prepare [--data_dir DIR] [--source_dir DIR] [--only NAMES] [--dataset NAME]`.

Without `--dataset`: writes the offline datasets, Fashion-MNIST, the
cluttered Fashion-MNIST localisation benchmark
(saol_jax.data.cluttered_fashion_mnist, 20,000 train / 5,000 test canvases
by default, about 30 s on 2 cores) and the target Fashion-MNIST benchmark,
where the class decides the location (saol_jax.data.target_fashion_mnist,
20,000 train / 5,000 validation / 5,000 test canvases by default);
`--only` names some of them (comma-separated). With `--dataset NAME`: any tfds dataset,
through its builder's `download_and_prepare` (`--manual_dir` for data that
cannot be downloaded, e.g. ImageNet). Each dataset is written in TFRecord,
which tf.data reads (`dataset.backend='tfdata'`), plus an ArrayRecord copy,
which random access reads (`dataset.backend='grain'`): tensorflow-datasets
4.9's `as_dataset` does not read ArrayRecord and its `as_data_source` reads
nothing else. What is already there is left as it is (a dataset prepared
before gets its missing ArrayRecord copy). Writing TFRecord needs TensorFlow:
where it is not installed, the offline datasets are written in ArrayRecord
alone (images PNG-encoded by Pillow), which the grain path reads.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable

import tensorflow_datasets as tfds

from saol_jax.data import target_fashion_mnist as target
from saol_jax.data.cluttered_fashion_mnist import DEFAULT_SIZES, NAME, ClutteredFashionMNIST
from saol_jax.data.fashion_mnist import DEFAULT_SOURCE_DIR, prepare_fashion_mnist
from saol_jax.data.grain_source import add_array_record


def prepare_tfds(name: str, data_dir: str | None, manual_dir: str | None) -> str:
    """Downloads and writes tfds dataset `name` under `data_dir`; returns the data_dir root.

    FileNotFoundError names the dataset when tfds has no builder of that name.
    """
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.DatasetNotFoundError:
        raise FileNotFoundError(f"tensorflow_datasets has no dataset {name!r} "
                                "(see tfds.list_builders() for the names)") from None
    if not builder.is_prepared():
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    return os.fspath(builder.data_dir_root)


def with_array_record(name: str, prepare: Callable[[], str]) -> str:
    """Runs `prepare` (which returns the data_dir root), then adds the ArrayRecord copy of `name` there."""
    root = prepare()
    add_array_record(tfds.builder(name, data_dir=root))
    return root


def main(argv: list[str] | None = None) -> int:
    """Parses the flags, prepares the datasets and prints where they live."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default=None, help="tfds data dir (default: tfds default, TFDS_DATA_DIR)")
    parser.add_argument("--dataset", default=None,
                        help="a tfds dataset name ('name' or 'name/config:version') instead of the offline ones")
    parser.add_argument("--manual_dir", default=None, help="--dataset: where its manually downloaded files are")
    parser.add_argument("--source_dir", default=DEFAULT_SOURCE_DIR, help="directory holding the idx .gz files")
    parser.add_argument("--cluttered_train", type=int, default=DEFAULT_SIZES["train"],
                        help=f"{NAME} train examples (at most 60000)")
    parser.add_argument("--cluttered_test", type=int, default=DEFAULT_SIZES["test"],
                        help=f"{NAME} test examples (at most 10000)")
    for split, size in target.DEFAULT_SIZES.items():
        parser.add_argument(f"--target_{split}", type=int, default=size, help=f"{target.NAME} {split} examples")
    parser.add_argument("--only", default=None,
                        help=f"comma-separated offline datasets to write (default all: fashion_mnist,{NAME},{target.NAME})")
    args = parser.parse_args(argv)
    sizes = {"train": args.cluttered_train, "test": args.cluttered_test}
    target_sizes = {split: getattr(args, f"target_{split}") for split in target.DEFAULT_SIZES}
    if args.dataset:
        jobs = ((args.dataset, lambda: prepare_tfds(args.dataset, args.data_dir, args.manual_dir)),)
    else:
        jobs = (
            ("fashion_mnist", lambda: prepare_fashion_mnist(args.data_dir, source_dir=args.source_dir)),
            (NAME, lambda: ClutteredFashionMNIST.prepare(args.data_dir, source_dir=args.source_dir, sizes=sizes)),
            (target.NAME, lambda: target.TargetFashionMNIST.prepare(args.data_dir, source_dir=args.source_dir,
                                                                    sizes=target_sizes)),
        )
        if args.only:
            wanted = args.only.split(",")
            unknown = sorted(set(wanted) - {name for name, _ in jobs})
            if unknown:
                print(f"error: --only: unknown dataset(s) {', '.join(unknown)}; the offline ones are "
                      f"{', '.join(name for name, _ in jobs)}", file=sys.stderr)
                return 2
            jobs = tuple(job for job in jobs if job[0] in wanted)
    for name, prepare in jobs:
        start = time.perf_counter()
        try:
            root = with_array_record(name, prepare)
        except (FileNotFoundError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(f"{name} ready in {os.path.join(root, name.split(':')[0])} "
              f"({time.perf_counter() - start:.1f} s); use data_dir={root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
