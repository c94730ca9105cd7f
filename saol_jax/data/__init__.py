"""Data: tfds input pipelines, preprocessing, and the offline datasets.

One job a module: `discovery` (finding a prepared dataset, with errors that
say how to prepare it), `info` (classes, input shape, splits), `config`
(the `dataset` field's defaults), `hosts` (which share of a split each
process reads); the tf.data path: `transforms` (per-example transforms),
`preprocess` (the seeded image operations), `train_stream` (the resumable
train stream), `padded_eval` (equal eval batches on every host) and
`tfdata` (shared tf.data settings); the TensorFlow-free path
(`dataset.backend='grain'`): `grain_source`, `grain_stream` and
`grain_transforms`. The offline datasets: `fashion_mnist` (from the idx
files), the localisation benchmarks `cluttered_fashion_mnist` and
`target_fashion_mnist` built from them, and `prepare`, the command that
writes them (`python -m saol_jax.data.prepare`).
`host_train_batches` and `host_eval_batches` follow `dataset.backend`.
TensorFlow is imported only when a tf.data path runs.
"""

from collections.abc import Iterator

from saol_jax.data import grain_stream, padded_eval, train_stream
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
from saol_jax.data.padded_eval import eval_steps
from saol_jax.data.train_stream import steps_per_epoch, train_batches

BACKENDS = {"tfdata": (train_stream, padded_eval), "grain": (grain_stream, grain_stream)}


def _backend(dataset_config):
    """The (train, eval) modules of `dataset.backend` (a config saved before the field existed: the default)."""
    backend = dataset_config.get("backend", default_dataset_config().backend)
    if backend not in BACKENDS:
        raise DatasetFormatError(f"dataset.backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    return BACKENDS[backend]


def host_train_batches(dataset_config, *, global_batch_size: int, seed: int, start_step: int = 0) -> Iterator[dict]:
    """This process's slice of every global train batch, from `start_step` on, read by `dataset.backend`."""
    return _backend(dataset_config)[0].host_train_batches(
        dataset_config, global_batch_size=global_batch_size, seed=seed, start_step=start_step)


def eval_batches(dataset_config, *, global_batch_size: int, split: str | None = None,
                 process_index: int | None = None, process_count: int | None = None) -> Iterator[dict]:
    """One process's share of `split` (default: the eval split) once (padded, masked), read by
    `dataset.backend`; see `padded_eval`."""
    return _backend(dataset_config)[1].eval_batches(
        dataset_config, global_batch_size=global_batch_size, split=split, process_index=process_index,
        process_count=process_count)


def host_eval_batches(dataset_config, *, global_batch_size: int, split: str | None = None) -> Iterator[dict]:
    """This process's slice of every global batch of `split` (padded, masked), read by `dataset.backend`."""
    return _backend(dataset_config)[1].host_eval_batches(dataset_config, global_batch_size=global_batch_size,
                                                        split=split)


__all__ = [
    "BACKENDS",
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
