"""Eval batches: each host's share of a split (the eval split unless told) once, padded to the
same number of batches.

Every host runs the same number of eval steps (a collective step cannot
wait for a host that has finished), so the short shares are padded with
examples whose `mask` is False and which the eval step leaves out of its sums.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import jax
import numpy as np
from etils import epy
import tensorflow_datasets as tfds

from saol_jax.data import tfdata
from saol_jax.data.discovery import feature_keys, open_builder
from saol_jax.data.hosts import concatenated, local_batch_size, process, read_shares
from saol_jax.data.info import info_from_builder, native_shape, num_examples
from saol_jax.data.transforms import eval_transform, pairs

with epy.lazy_imports():  # TensorFlow only where tf.data runs
    import tensorflow as tf

BOX_KEY = "bbox"


def scores_boxes(builder: tfds.core.DatasetBuilder, dataset_config) -> bool:
    """Whether eval batches carry each example's true box: a top-level BBoxFeature named BOX_KEY,
    and no `eval_resize` crop that would move it."""
    features = builder.info.features
    return (BOX_KEY in features.keys() and isinstance(features[BOX_KEY], tfds.features.BBoxFeature)
            and not dataset_config.eval_resize)


def eval_steps(num_split: int, global_batch_size: int, *, process_count: int | None = None) -> int:
    """Eval batches per host over a split of `num_split` examples: enough for the largest host
    share, the same on every host."""
    count = jax.process_count() if process_count is None else process_count
    largest_share = math.ceil(num_split / count)
    return math.ceil(largest_share / local_batch_size(global_batch_size, count))


def eval_batches(dataset_config, *, global_batch_size: int, split: str | None = None,
                 process_index: int | None = None, process_count: int | None = None) -> Iterator[dict]:
    """This host's share of `split` (default: the eval split; any tfds split expression) once,
    as {'image', 'label', 'mask'} batches padded with mask=False.

    Every host yields `eval_steps(examples in split, global_batch_size)` batches. A
    dataset with one true box per image (a top-level `bbox` BBoxFeature) adds
    `bbox` float32 [b, 4] (normalised), unless `eval_resize` crops the image.
    """
    index, count = process(process_index, process_count)
    batch = local_batch_size(global_batch_size, count)
    builder = open_builder(dataset_config)
    info = info_from_builder(dataset_config, builder)
    split = split or info.eval_split
    host_split = tfds.split_for_jax_process(split, process_index=index, process_count=count)
    padding = eval_steps(num_examples(builder, split), global_batch_size, process_count=count) * batch \
        - num_examples(builder, host_split)
    if padding < 0:
        raise RuntimeError(f"host {index} holds more eval examples than eval_steps allows")
    transform = eval_transform(dataset_config, native_shape(builder, dataset_config), info.image_shape)

    boxed = scores_boxes(builder, dataset_config)

    def example(image, label, *box):
        image = tf.ensure_shape(transform(image), info.image_shape)
        out = {"image": image, "label": tf.cast(label, tf.int32), "mask": tf.constant(True)}
        return {**out, "bbox": tf.cast(box[0], tf.float32)} if box else out

    image_key, label_key = feature_keys(builder, dataset_config)
    ds = builder.as_dataset(split=host_split, shuffle_files=False,
                            read_config=tfds.ReadConfig(try_autocache=False, options=tfdata.options()))
    if boxed:
        ds = ds.map(lambda ex: (ex[image_key], ex[label_key], ex[BOX_KEY]))
    else:
        ds = ds.map(pairs((image_key, label_key)))
    ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    pad = {"image": np.zeros(info.image_shape, np.uint8), "label": np.int32(0), "mask": False}
    pad.update({"bbox": np.zeros(4, np.float32)} if boxed else {})
    ds = ds.concatenate(tf.data.Dataset.from_tensors(pad).repeat(padding))
    ds = tfdata.prefetch(ds.batch(batch), dataset_config).with_options(tfdata.options())
    return ds.as_numpy_iterator()


def host_eval_batches(dataset_config, *, global_batch_size: int, split: str | None = None) -> Iterator[dict]:
    """This process's slice of every global batch of `split` (default: the eval split; its
    shares, concatenated, padded)."""
    mine, shares = read_shares(dataset_config)
    return concatenated([
        eval_batches(dataset_config, global_batch_size=global_batch_size, split=split,
                     process_index=share, process_count=shares)
        for share in mine
    ])
