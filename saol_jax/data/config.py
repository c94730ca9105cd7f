"""Defaults of a config's `dataset` field: which tfds dataset, its splits, and how it is read."""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict


def default_dataset_config() -> ml_collections.ConfigDict:
    """Defaults for a config's `dataset` field (Fashion-MNIST, CIFAR-style augmentation)."""
    return ml_collections.ConfigDict({
        "name": "fashion_mnist",  # tfds name, optionally 'name:version'
        "data_dir": config_dict.placeholder(str),  # None: tfds default (TFDS_DATA_DIR)
        # Features read when the dataset declares no (image, label) supervised keys,
        # e.g. one written with tfds.dataset_builders.store_as_tfds_dataset.
        "image_key": "image",
        "label_key": "label",
        "train_split": "train",
        "eval_split": config_dict.placeholder(str),  # None: 'test' if present else 'validation'
        # The split every choice is made on (periodic evals, `val/*` in metrics.jsonl);
        # None: no validation, the eval split is evaluated periodically as before. The
        # recipes carve it from train with a percent slice ('train[90%:]' against
        # 'train[:90%]'), or name the dataset's own 'validation' split where it has one
        # that is not its eval split. A slice is fixed: tfds stores a split in an order
        # set by hashing each example's key, not in source (class) order.
        "validation_split": config_dict.placeholder(str),
        "image_size": config_dict.placeholder(int),  # None: native size, or 224 if sizes vary
        "augment": "cifar",  # 'cifar' | 'inception' | 'none'
        "color_jitter": 0.0,  # inception only; 0.4 in the ImageNet recipe
        "lighting": 0.0,  # inception only; PCA lighting std, 0.1 in the ImageNet recipe
        "eval_resize": False,  # eval: shorter side to image_size / 0.875, centre crop
        "shuffle_buffer": 50_000,  # streaming train reads only
        "cache": True,  # keep the decoded train split in host memory (small datasets)
        "prefetch": 2,  # batches prepared ahead
        # 'tfdata': tf.data over the TFRecord files; 'grain': random access to the ArrayRecord
        # copy (python -m saol_jax.data.prepare writes both), no TensorFlow needed.
        "backend": "tfdata",
        "workers": 0,  # grain: processes building batches (0: in the training process)
        # Equal shares each split is cut into (0 = one per process). Process p reads
        # the consecutive shares p*k .. p*k+k-1, k = host_shards / process_count, so a
        # run on fewer hosts with host_shards = N sees the data of an N-host run.
        "host_shards": 0,
    })


def carved_splits(percent: int, split: str = "train") -> tuple[str, str]:
    """(train_split, validation_split): the last `percent`% of `split` held out for validation.

    tfds rounds a percent boundary to the closest example, and both slices use
    the same boundary, so they are disjoint and together cover `split`.
    """
    if not 0 < percent < 100:
        raise ValueError(f"the validation carve must be between 0 and 100 percent, got {percent}")
    return f"{split}[:{100 - percent}%]", f"{split}[{100 - percent}%:]"
