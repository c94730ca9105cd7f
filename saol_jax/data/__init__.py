"""Data: tfds input pipelines, preprocessing, and offline Fashion-MNIST preparation.

One job a module: `discovery` (finding a prepared dataset, with errors that
say how to prepare it), `info` (classes, input shape, splits), `config`
(the `dataset` field's defaults), `transforms`, `train_stream` (the
resumable train stream), `padded_eval` (equal eval batches on every host),
`hosts` (which share of a split each process reads) and `tfdata` (shared
tf.data settings).
"""

from saol_jax.data.config import carved_splits, default_dataset_config
from saol_jax.data.discovery import (
    DatasetFormatError,
    DatasetNotFoundError,
    feature_keys,
    open_builder,
    prepare_command,
)
from saol_jax.data.fashion_mnist import prepare_fashion_mnist
from saol_jax.data.hosts import local_batch_size, read_shares
from saol_jax.data.info import DatasetInfo, load_info, roles
from saol_jax.data.padded_eval import eval_batches, eval_steps, host_eval_batches
from saol_jax.data.train_stream import host_train_batches, steps_per_epoch, train_batches

__all__ = [
    "DatasetFormatError",
    "DatasetInfo",
    "DatasetNotFoundError",
    "carved_splits",
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
    "roles",
    "steps_per_epoch",
    "train_batches",
]
