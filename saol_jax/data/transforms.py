"""Per-example tf.data transforms: a tfds example to (image, label), images to the model input.

Train transforms take an explicit seed (see `saol_jax.data.preprocess`), so
an example's augmentation depends only on the seed it is given.
"""

from __future__ import annotations

from collections.abc import Callable

from etils import epy

from saol_jax.data import preprocess

with epy.lazy_imports():  # TensorFlow only where tf.data runs
    import tensorflow as tf

AUGMENTATIONS = ("cifar", "inception", "none")


def pairs(keys: tuple[str, str]) -> Callable[[dict], tuple[tf.Tensor, tf.Tensor]]:
    """Maps a tfds example dict to (image, label)."""
    image_key, label_key = keys
    return lambda example: (example[image_key], example[label_key])


def _fit(image: tf.Tensor, native: tuple[int | None, ...], shape: tuple[int, int, int]) -> tf.Tensor:
    """Resizes to the model input size unless the image already has it."""
    if tuple(native[:2]) == shape[:2]:
        return image
    return preprocess.resize(image, shape[:2])


def train_transform(dataset_config, native, shape) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """(uint8 image, seed) -> augmented uint8 image of the model input shape."""
    augment = dataset_config.augment
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {augment!r}")
    if augment == "inception":
        return lambda image, seed: preprocess.inception_train(
            image, seed, shape[0], dataset_config.color_jitter, dataset_config.lighting)
    if augment == "cifar":
        return lambda image, seed: preprocess.cifar_train(_fit(image, native, shape), seed)
    return lambda image, seed: _fit(image, native, shape)


def eval_transform(dataset_config, native, shape) -> Callable[[tf.Tensor], tf.Tensor]:
    """uint8 image -> uint8 image of the model input shape (resized, or centre-cropped with `eval_resize`)."""
    if dataset_config.eval_resize:
        return lambda image: preprocess.resize_center_crop(image, shape[0])
    return lambda image: _fit(image, native, shape)
