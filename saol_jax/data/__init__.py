"""Data: tfds input pipelines, preprocessing, and offline Fashion-MNIST preparation."""

from saol_jax.data.fashion_mnist import prepare_fashion_mnist
from saol_jax.data.pipeline import (
    DatasetFormatError,
    DatasetInfo,
    DatasetNotFoundError,
    default_dataset_config,
    eval_batches,
    eval_steps,
    feature_keys,
    host_eval_batches,
    host_train_batches,
    load_info,
    local_batch_size,
    open_builder,
    prepare_command,
    read_shares,
    steps_per_epoch,
    train_batches,
)

__all__ = [
    "DatasetFormatError",
    "DatasetInfo",
    "DatasetNotFoundError",
    "default_dataset_config",
    "eval_batches",
    "eval_steps",
    "feature_keys",
    "host_eval_batches",
    "host_train_batches",
    "load_info",
    "local_batch_size",
    "open_builder",
    "prepare_command",
    "prepare_fashion_mnist",
    "read_shares",
    "steps_per_epoch",
    "train_batches",
]
