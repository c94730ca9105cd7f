"""The resumable train stream: endless, deterministic, shuffled and augmented per epoch.

The stream is a deterministic function of `seed`: epoch `e` is shuffled
with a seed derived from (seed, e) and every example's augmentation is keyed by
(seed, process, e, position in epoch), so `start_step=s` reproduces the
uninterrupted stream from step `s` on, skipping examples before any decoding.
Each epoch contributes `num_host_examples // local_batch` whole batches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import jax
from etils import epy
import tensorflow_datasets as tfds

from saol_jax.data import tfdata
from saol_jax.data.discovery import feature_keys, open_builder
from saol_jax.data.hosts import concatenated, local_batch_size, process, read_shares
from saol_jax.data.info import DatasetInfo, info_from_builder, native_shape, num_examples
from saol_jax.data.transforms import pairs, train_transform

with epy.lazy_imports():  # TensorFlow only where tf.data runs
    import tensorflow as tf


def _int_seed(key: tf.Tensor) -> tf.Tensor:
    """A scalar int64 seed (for tf.data shuffles) drawn from a stateless key."""
    return tf.random.stateless_uniform([], key, minval=None, maxval=None, dtype=tf.int64)


def _fold(key: tf.Tensor, data) -> tf.Tensor:
    return tf.random.experimental.stateless_fold_in(key, tf.cast(data, tf.int64))


@dataclasses.dataclass(frozen=True)
class _EpochPlan:
    """Where the stream starts and how much of each epoch it uses."""

    start_epoch: int
    start_offset: int  # examples of the first epoch already consumed
    per_epoch: int  # examples used per epoch: whole local batches


def _epoch_plan(num_host: int, batch: int, start_step: int) -> _EpochPlan:
    steps_per_epoch = num_host // batch
    if steps_per_epoch == 0:
        raise ValueError(f"local batch {batch} exceeds this host's {num_host} training examples")
    epoch, step = divmod(start_step, steps_per_epoch)
    return _EpochPlan(epoch, step * batch, steps_per_epoch * batch)


def _skip(epoch: tf.Tensor, plan: _EpochPlan) -> tf.Tensor:
    """Examples to skip at the start of `epoch`: only the first epoch is partly consumed."""
    return tf.where(epoch == plan.start_epoch, tf.constant(plan.start_offset, tf.int64), tf.constant(0, tf.int64))


def _cached_epochs(builder, dataset_config, host_split, plan: _EpochPlan, shuffle_key):
    """Epoch stream over the decoded split held in memory: full permutation per epoch."""
    if None in native_shape(builder, dataset_config):
        raise ValueError(f"{builder.name}: cache=True needs fixed-size images; set cache=False")
    whole = tfds.as_numpy(builder.as_dataset(split=host_split, batch_size=-1, shuffle_files=False))
    images, labels = pairs(feature_keys(builder, dataset_config))(whole)
    images, labels = tf.constant(images), tf.constant(labels)
    num = int(labels.shape[0])

    @tf.autograph.experimental.do_not_convert
    def epoch(e):
        perm = tf.random.experimental.stateless_shuffle(tf.range(num, dtype=tf.int64), _fold(shuffle_key, e))
        ds = tf.data.Dataset.from_tensor_slices(perm[:plan.per_epoch]).enumerate()
        return ds.skip(_skip(e, plan)).map(lambda i, j: (e, i, j))

    def load(index):
        return tf.gather(images, index), tf.gather(labels, index)

    return epoch, load


def _streamed_epochs(builder, dataset_config, host_split, plan: _EpochPlan, shuffle_key):
    """Epoch stream read from the tfds files: file order and buffer shuffled per epoch."""
    image_key, label_key = feature_keys(builder, dataset_config)
    image_feature = builder.info.features[image_key]

    @tf.autograph.experimental.do_not_convert
    def epoch(e):
        seed = _int_seed(_fold(shuffle_key, e))
        ds = builder.as_dataset(
            split=host_split, shuffle_files=True, decoders={image_key: tfds.decode.SkipDecoding()},
            read_config=tfds.ReadConfig(shuffle_seed=seed, try_autocache=False, options=tfdata.options()))
        ds = ds.map(lambda ex: (ex[image_key], ex[label_key]))
        ds = ds.shuffle(dataset_config.shuffle_buffer, seed=seed).take(plan.per_epoch).enumerate()
        return ds.skip(_skip(e, plan)).map(lambda i, record: (e, i, record))

    def load(record):
        encoded, label = record
        return image_feature.decode_example(encoded), label

    return epoch, load


def train_batches(dataset_config, *, global_batch_size: int, seed: int, start_step: int = 0,
                  process_index: int | None = None, process_count: int | None = None) -> Iterator[dict]:
    """Endless, resumable train batches {'image': uint8 [b,H,W,C], 'label': int32 [b]} for this host.

    b = global_batch_size // process_count. `process_index`/`process_count`
    default to jax's; pass them to simulate other hosts.
    """
    index, count = process(process_index, process_count)
    batch = local_batch_size(global_batch_size, count)
    builder = open_builder(dataset_config)
    info = info_from_builder(dataset_config, builder)
    host_split = tfds.split_for_jax_process(
        info.train_split, process_index=index, process_count=count, drop_remainder=True)
    plan = _epoch_plan(num_examples(builder, host_split), batch, start_step)
    root_key = tf.constant([seed, index], tf.int64)
    shuffle_key, augment_key = _fold(root_key, 0), _fold(root_key, 1)
    if dataset_config.cache:
        epoch, load = _cached_epochs(builder, dataset_config, host_split, plan, shuffle_key)
    else:
        epoch, load = _streamed_epochs(builder, dataset_config, host_split, plan, shuffle_key)
    transform = train_transform(dataset_config, native_shape(builder, dataset_config), info.image_shape)

    def example(e, i, record):
        image, label = load(record)
        image = transform(image, _fold(_fold(augment_key, e), i))
        return {"image": tf.ensure_shape(image, info.image_shape), "label": tf.cast(label, tf.int32)}

    ds = tf.data.Dataset.counter(plan.start_epoch).flat_map(epoch)
    ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = tfdata.prefetch(ds.batch(batch, drop_remainder=True), dataset_config).with_options(tfdata.options())
    return ds.as_numpy_iterator()


def host_train_batches(dataset_config, *, global_batch_size: int, seed: int, start_step: int = 0) -> Iterator[dict]:
    """This process's slice of every global train batch (its shares, concatenated)."""
    mine, shares = read_shares(dataset_config)
    return concatenated([
        train_batches(dataset_config, global_batch_size=global_batch_size, seed=seed,
                      start_step=start_step, process_index=share, process_count=shares)
        for share in mine
    ])


def steps_per_epoch(info: DatasetInfo, global_batch_size: int, *, process_count: int | None = None) -> int:
    """Train steps in one epoch: whole local batches of each host's equal share."""
    count = jax.process_count() if process_count is None else process_count
    return (info.num_train // count) // local_batch_size(global_batch_size, count)
