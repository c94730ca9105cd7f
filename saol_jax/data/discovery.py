"""Finding a prepared tfds dataset and its image and label features.

Every way this can fail ends in one error whose message says what to run or
set: a missing data_dir, an unknown name, an unprepared dataset, a dataset
without an image and a class label.
"""

from __future__ import annotations

import difflib
import functools
import logging
import sys

import tensorflow_datasets as tfds
from etils import epath


class DatasetNotFoundError(FileNotFoundError):
    """The dataset (or its data_dir) is missing; the message says how to create it."""


class DatasetFormatError(ValueError):
    """The dataset lacks what training needs (an image and a class label); the message says what to set."""


def prepare_command(name: str, data_dir: str) -> str:
    """The command that writes dataset `name` (TFRecord and ArrayRecord) into `data_dir`.

    Not `tfds build`: the pinned tensorflow-datasets' command line cannot start
    without apache-beam, while the builder's own `download_and_prepare` can.
    """
    base = name.split(":")[0]
    if base in ("fashion_mnist", "cluttered_fashion_mnist", "target_fashion_mnist"):
        return f"python -m saol_jax.data.prepare --data_dir {data_dir}"
    command = f"python -m saol_jax.data.prepare --dataset {base} --data_dir {data_dir}"
    if base.split("/")[0] == "imagenet2012":
        command += (
            " --manual_dir MANUAL_DIR   (ImageNet cannot be downloaded automatically: first put "
            "ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from image-net.org into MANUAL_DIR, "
            "see https://www.tensorflow.org/datasets/catalog/imagenet2012)"
        )
    return command


def _default_data_dir() -> str:
    return tfds.core.constants.get_default_data_dir()


def _unknown_name_message(name: str, data_dir: str) -> str:
    base = name.split(":")[0].split("/")[0]
    known = tfds.list_builders(with_community_datasets=False)
    close = difflib.get_close_matches(base, known, n=3)
    hint = f" Did you mean: {', '.join(close)}?" if close else " See tfds.list_builders() for the names."
    return (
        f"Unknown dataset {name!r}: tensorflow_datasets has no builder of that name and no copy "
        f"was found in data_dir {data_dir!r}.{hint} If it is your own tfds dataset, write it into "
        f"that data_dir first with its builder's download_and_prepare() (then, for "
        f"dataset.backend='grain', add the ArrayRecord copy with "
        f"`python -m saol_jax.data.prepare --dataset NAME --data_dir {data_dir}`)."
    )


def _keep_tf_off_gpus(dataset_config) -> None:
    """Hides GPUs from TensorFlow so tf.data never takes accelerator memory from JAX.

    Before the first tf.data pipeline is built: TensorFlow is imported by this function
    for `dataset.backend='tfdata'` (which needs it anyway), or hidden if some
    other code imported it; the grain path runs without it.
    """
    tf = sys.modules.get("tensorflow")
    if tf is None and dataset_config.get("backend", "tfdata") == "tfdata":
        import tensorflow as tf  # noqa: PLC0415 - lazily: only the tf.data path needs TensorFlow
    if tf is not None:
        _hide_gpus(tf)


@functools.cache
def _hide_gpus(tf) -> None:
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:
        logging.warning("TensorFlow was initialised before its GPUs could be hidden")


def open_builder(dataset_config) -> tfds.core.DatasetBuilder:
    """The tfds builder of a prepared dataset, or DatasetNotFoundError saying how to prepare it."""
    _keep_tf_off_gpus(dataset_config)
    name, data_dir = dataset_config.name, dataset_config.data_dir
    shown_dir = data_dir if data_dir is not None else _default_data_dir()
    if data_dir is not None and not epath.Path(data_dir).is_dir():
        raise DatasetNotFoundError(
            f"data_dir {data_dir!r} for dataset {name!r} does not exist. "
            f"Create the dataset there with: {prepare_command(name, data_dir)}"
        )
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.DatasetNotFoundError:
        raise DatasetNotFoundError(_unknown_name_message(name, shown_dir)) from None
    if not builder.is_prepared():
        root = str(builder.data_dir_root)
        raise DatasetNotFoundError(
            f"Dataset {name!r} is not prepared in data_dir {root!r} (looked for {builder.data_dir}). "
            f"Create it with: {prepare_command(name, root)}"
        )
    return builder


def feature_keys(builder: tfds.core.DatasetBuilder, dataset_config) -> tuple[str, str]:
    """(image, label) feature names: the dataset's supervised keys, else `dataset.image_key/label_key`."""
    keys = builder.info.supervised_keys
    if isinstance(keys, tuple) and len(keys) == 2 and all(isinstance(k, str) for k in keys):
        return keys
    features = builder.info.features
    image_key, label_key = dataset_config.image_key, dataset_config.label_key
    missing = [key for key in (image_key, label_key) if key not in features.keys()]
    if missing:
        raise DatasetFormatError(
            f"{builder.name} declares no supervised keys and has no feature {' or '.join(map(repr, missing))} "
            f"(its features: {', '.join(sorted(features.keys()))}); name its image and label features with "
            f"--config.dataset.image_key=NAME --config.dataset.label_key=NAME"
        )
    if not hasattr(features[label_key], "num_classes"):
        raise DatasetFormatError(
            f"{builder.name}: feature {label_key!r} is not a tfds ClassLabel, so the number of classes is "
            f"unknown; store labels as tfds.features.ClassLabel or set --config.dataset.label_key"
        )
    return image_key, label_key
