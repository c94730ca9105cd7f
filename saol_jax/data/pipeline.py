"""Host-side tf.data pipelines over tfds: resumable train stream and padded eval batches.

Each host reads its own share of a split (`tfds.split_for_jax_process`) and
yields uint8 images; normalisation happens on the device.

The train stream is a deterministic function of `seed`: epoch `e` is shuffled
with a seed derived from (seed, e) and every example's augmentation is keyed by
(seed, process, e, position in epoch), so `start_step=s` reproduces the
uninterrupted stream from step `s` on, skipping examples before any decoding.
Each epoch contributes `num_host_examples // local_batch` whole batches.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import logging
import math
from collections.abc import Callable, Iterator

import jax
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from ml_collections import config_dict

from saol_jax.data import preprocess

DEFAULT_LARGE_IMAGE_SIZE = 224
_AUGMENTATIONS = ("cifar", "inception", "none")


class DatasetNotFoundError(FileNotFoundError):
    """The dataset (or its data_dir) is missing; the message says how to create it."""


class DatasetFormatError(ValueError):
    """The dataset lacks what training needs (an image and a class label); the message says what to set."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the model and the trainer need to know about a dataset, read from tfds."""

    name: str
    num_classes: int
    image_shape: tuple[int, int, int]  # (H, W, C) of the model input after preprocessing
    train_split: str
    eval_split: str
    num_train: int
    num_eval: int


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
        "image_size": config_dict.placeholder(int),  # None: native size, or 224 if sizes vary
        "augment": "cifar",  # 'cifar' | 'inception' | 'none'
        "color_jitter": 0.0,  # inception only; 0.4 in the ImageNet recipe
        "lighting": 0.0,  # inception only; PCA lighting std, 0.1 in the ImageNet recipe
        "eval_resize": False,  # eval: shorter side to image_size / 0.875, centre crop
        "shuffle_buffer": 50_000,  # streaming train reads only
        "cache": True,  # keep the decoded train split in host memory (small datasets)
        "prefetch": 2,  # batches prepared ahead
        # Equal shares each split is cut into (0 = one per process). Process p reads
        # the consecutive shares p*k .. p*k+k-1, k = host_shards / process_count, so a
        # run on fewer hosts with host_shards = N sees the data of an N-host run.
        "host_shards": 0,
    })


# ----------------------------------------------------------------------------- datasets


def prepare_command(name: str, data_dir: str) -> str:
    """The command that writes dataset `name` into `data_dir`."""
    base = name.split(":")[0]
    if base in ("fashion_mnist", "cluttered_fashion_mnist"):
        return f"python -m saol_jax.data.prepare --data_dir {data_dir}"
    command = f"tfds build {base} --data_dir {data_dir}"
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
        f"that data_dir first (e.g. `tfds build PATH/TO/BUILDER --data_dir {data_dir}`)."
    )


def open_builder(dataset_config) -> tfds.core.DatasetBuilder:
    """The tfds builder of a prepared dataset, or DatasetNotFoundError saying how to prepare it."""
    _keep_tf_off_gpus()
    name, data_dir = dataset_config.name, dataset_config.data_dir
    shown_dir = data_dir if data_dir is not None else _default_data_dir()
    if data_dir is not None and not tf.io.gfile.isdir(data_dir):
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


def _pairs(keys: tuple[str, str]) -> Callable[[dict], tuple[tf.Tensor, tf.Tensor]]:
    """Maps a tfds example dict to (image, label)."""
    image_key, label_key = keys
    return lambda example: (example[image_key], example[label_key])


def _num_examples(builder: tfds.core.DatasetBuilder, split) -> int:
    try:
        return builder.info.splits[split].num_examples
    except (KeyError, ValueError) as e:
        raise ValueError(f"{builder.name}: bad split {split!r} "
                         f"(splits: {sorted(builder.info.splits)}): {e}") from None


def _default_eval_split(builder: tfds.core.DatasetBuilder) -> str:
    for split in ("test", "validation"):
        if split in builder.info.splits:
            return split
    raise ValueError(f"{builder.name} has neither a 'test' nor a 'validation' split; set eval_split")


def _native_shape(builder: tfds.core.DatasetBuilder, dataset_config) -> tuple[int | None, ...]:
    image_key, _ = feature_keys(builder, dataset_config)
    return tuple(builder.info.features[image_key].shape)


def _model_image_shape(dataset_config, native: tuple[int | None, ...]) -> tuple[int, int, int]:
    channels = native[-1] if native[-1] is not None else 3
    if dataset_config.image_size:
        return (dataset_config.image_size, dataset_config.image_size, channels)
    if None not in native[:2]:
        return (native[0], native[1], channels)
    return (DEFAULT_LARGE_IMAGE_SIZE, DEFAULT_LARGE_IMAGE_SIZE, channels)


def _info_from_builder(dataset_config, builder: tfds.core.DatasetBuilder) -> DatasetInfo:
    _, label_key = feature_keys(builder, dataset_config)
    eval_split = dataset_config.eval_split or _default_eval_split(builder)
    return DatasetInfo(
        name=dataset_config.name,
        num_classes=builder.info.features[label_key].num_classes,
        image_shape=_model_image_shape(dataset_config, _native_shape(builder, dataset_config)),
        train_split=dataset_config.train_split,
        eval_split=eval_split,
        num_train=_num_examples(builder, dataset_config.train_split),
        num_eval=_num_examples(builder, eval_split),
    )


def load_info(dataset_config) -> DatasetInfo:
    """Classes, model input shape, splits and sizes of the configured dataset."""
    return _info_from_builder(dataset_config, open_builder(dataset_config))


# ----------------------------------------------------------------------------- helpers


@functools.cache
def _keep_tf_off_gpus() -> None:
    """Hides GPUs from TensorFlow so tf.data never takes accelerator memory from JAX."""
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:
        logging.warning("TensorFlow was initialised before its GPUs could be hidden")


def _process(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    return (jax.process_index() if process_index is None else process_index,
            jax.process_count() if process_count is None else process_count)


def local_batch_size(global_batch_size: int, process_count: int) -> int:
    """Per-host batch size; the global batch must split evenly over the hosts."""
    if global_batch_size <= 0 or global_batch_size % process_count:
        raise ValueError(f"global_batch_size {global_batch_size} is not a positive multiple of "
                         f"the process count {process_count}")
    return global_batch_size // process_count


def _options() -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = True
    options.threading.max_intra_op_parallelism = 1
    return options


def _prefetch(ds: tf.data.Dataset, dataset_config) -> tf.data.Dataset:
    return ds.prefetch(dataset_config.prefetch) if dataset_config.prefetch else ds


def _fit(image: tf.Tensor, native: tuple[int | None, ...], shape: tuple[int, int, int]) -> tf.Tensor:
    """Resizes to the model input size unless the image already has it."""
    if tuple(native[:2]) == shape[:2]:
        return image
    return preprocess.resize(image, shape[:2])


def _train_transform(dataset_config, native, shape) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """(uint8 image, seed) -> augmented uint8 image of the model input shape."""
    augment = dataset_config.augment
    if augment not in _AUGMENTATIONS:
        raise ValueError(f"augment must be one of {_AUGMENTATIONS}, got {augment!r}")
    if augment == "inception":
        return lambda image, seed: preprocess.inception_train(
            image, seed, shape[0], dataset_config.color_jitter, dataset_config.lighting)
    if augment == "cifar":
        return lambda image, seed: preprocess.cifar_train(_fit(image, native, shape), seed)
    return lambda image, seed: _fit(image, native, shape)


def _eval_transform(dataset_config, native, shape) -> Callable[[tf.Tensor], tf.Tensor]:
    if dataset_config.eval_resize:
        return lambda image: preprocess.resize_center_crop(image, shape[0])
    return lambda image: _fit(image, native, shape)


# ----------------------------------------------------------------------------- train


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
    if None in _native_shape(builder, dataset_config):
        raise ValueError(f"{builder.name}: cache=True needs fixed-size images; set cache=False")
    whole = tfds.as_numpy(builder.as_dataset(split=host_split, batch_size=-1, shuffle_files=False))
    images, labels = _pairs(feature_keys(builder, dataset_config))(whole)
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
            read_config=tfds.ReadConfig(shuffle_seed=seed, try_autocache=False, options=_options()))
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
    index, count = _process(process_index, process_count)
    batch = local_batch_size(global_batch_size, count)
    builder = open_builder(dataset_config)
    info = _info_from_builder(dataset_config, builder)
    host_split = tfds.split_for_jax_process(
        info.train_split, process_index=index, process_count=count, drop_remainder=True)
    plan = _epoch_plan(_num_examples(builder, host_split), batch, start_step)
    root_key = tf.constant([seed, index], tf.int64)
    shuffle_key, augment_key = _fold(root_key, 0), _fold(root_key, 1)
    if dataset_config.cache:
        epoch, load = _cached_epochs(builder, dataset_config, host_split, plan, shuffle_key)
    else:
        epoch, load = _streamed_epochs(builder, dataset_config, host_split, plan, shuffle_key)
    transform = _train_transform(dataset_config, _native_shape(builder, dataset_config), info.image_shape)

    def example(e, i, record):
        image, label = load(record)
        image = transform(image, _fold(_fold(augment_key, e), i))
        return {"image": tf.ensure_shape(image, info.image_shape), "label": tf.cast(label, tf.int32)}

    ds = tf.data.Dataset.counter(plan.start_epoch).flat_map(epoch)
    ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = _prefetch(ds.batch(batch, drop_remainder=True), dataset_config).with_options(_options())
    return ds.as_numpy_iterator()


# ----------------------------------------------------------------------------- eval


BOX_KEY = "bbox"


def _has_box(builder: tfds.core.DatasetBuilder) -> bool:
    """Whether each example has one true box: a top-level BBoxFeature named BOX_KEY."""
    features = builder.info.features
    return BOX_KEY in features.keys() and isinstance(features[BOX_KEY], tfds.features.BBoxFeature)


def read_shares(dataset_config) -> tuple[range, int]:
    """The shares of each split this process reads, and the number of shares."""
    shares = dataset_config.host_shards or jax.process_count()
    if shares % jax.process_count():
        raise ValueError(
            f"dataset.host_shards={shares} must be a multiple of the {jax.process_count()} processes"
        )
    per_process = shares // jax.process_count()
    first = jax.process_index() * per_process
    return range(first, first + per_process), shares


def _concatenated(streams: list[Iterator[dict]]) -> Iterator[dict]:
    for parts in zip(*streams):
        yield {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def host_train_batches(dataset_config, *, global_batch_size: int, seed: int, start_step: int = 0) -> Iterator[dict]:
    """This process's slice of every global train batch (its shares, concatenated)."""
    mine, shares = read_shares(dataset_config)
    return _concatenated([
        train_batches(dataset_config, global_batch_size=global_batch_size, seed=seed,
                      start_step=start_step, process_index=share, process_count=shares)
        for share in mine
    ])


def host_eval_batches(dataset_config, *, global_batch_size: int) -> Iterator[dict]:
    """This process's slice of every global eval batch (its shares, concatenated, padded)."""
    mine, shares = read_shares(dataset_config)
    return _concatenated([
        eval_batches(dataset_config, global_batch_size=global_batch_size,
                     process_index=share, process_count=shares)
        for share in mine
    ])


def steps_per_epoch(info: DatasetInfo, global_batch_size: int, *, process_count: int | None = None) -> int:
    """Train steps in one epoch: whole local batches of each host's equal share."""
    count = jax.process_count() if process_count is None else process_count
    return (info.num_train // count) // local_batch_size(global_batch_size, count)



def eval_steps(info: DatasetInfo, global_batch_size: int, *, process_count: int | None = None) -> int:
    """Eval batches per host: enough for the largest host share, the same on every host."""
    count = jax.process_count() if process_count is None else process_count
    largest_share = math.ceil(info.num_eval / count)
    return math.ceil(largest_share / local_batch_size(global_batch_size, count))


def eval_batches(dataset_config, *, global_batch_size: int, process_index: int | None = None,
                 process_count: int | None = None) -> Iterator[dict]:
    """This host's eval share once, as {'image', 'label', 'mask'} batches padded with mask=False.

    Every host yields `eval_steps(info, global_batch_size)` batches. A
    dataset with one true box per image (a top-level `bbox` BBoxFeature) adds
    `bbox` float32 [b, 4] (normalised), unless `eval_resize` crops the image.
    """
    index, count = _process(process_index, process_count)
    batch = local_batch_size(global_batch_size, count)
    builder = open_builder(dataset_config)
    info = _info_from_builder(dataset_config, builder)
    host_split = tfds.split_for_jax_process(info.eval_split, process_index=index, process_count=count)
    padding = eval_steps(info, global_batch_size, process_count=count) * batch \
        - _num_examples(builder, host_split)
    if padding < 0:
        raise RuntimeError(f"host {index} holds more eval examples than eval_steps allows")
    transform = _eval_transform(dataset_config, _native_shape(builder, dataset_config), info.image_shape)

    boxed = _has_box(builder) and not dataset_config.eval_resize

    def example(image, label, *box):
        image = tf.ensure_shape(transform(image), info.image_shape)
        out = {"image": image, "label": tf.cast(label, tf.int32), "mask": tf.constant(True)}
        return {**out, "bbox": tf.cast(box[0], tf.float32)} if box else out

    image_key, label_key = feature_keys(builder, dataset_config)
    ds = builder.as_dataset(split=host_split, shuffle_files=False,
                            read_config=tfds.ReadConfig(try_autocache=False, options=_options()))
    if boxed:
        ds = ds.map(lambda ex: (ex[image_key], ex[label_key], ex[BOX_KEY]))
    else:
        ds = ds.map(_pairs((image_key, label_key)))
    ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    pad = {"image": np.zeros(info.image_shape, np.uint8), "label": np.int32(0), "mask": False}
    pad.update({"bbox": np.zeros(4, np.float32)} if boxed else {})
    ds = ds.concatenate(tf.data.Dataset.from_tensors(pad).repeat(padding))
    ds = _prefetch(ds.batch(batch), dataset_config).with_options(_options())
    return ds.as_numpy_iterator()
