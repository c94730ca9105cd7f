"""tf.data settings every stream shares: deterministic order, one intra-op thread, batches prepared ahead."""

from __future__ import annotations

from etils import epy

with epy.lazy_imports():  # TensorFlow only where tf.data runs
    import tensorflow as tf


def options() -> tf.data.Options:
    """Deterministic element order, so a stream is a function of its seed alone."""
    result = tf.data.Options()
    result.deterministic = True
    result.threading.max_intra_op_parallelism = 1
    return result


def prefetch(ds: tf.data.Dataset, dataset_config) -> tf.data.Dataset:
    """`ds` with `dataset.prefetch` batches prepared ahead (none when 0)."""
    return ds.prefetch(dataset_config.prefetch) if dataset_config.prefetch else ds
