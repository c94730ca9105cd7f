"""Per-example numpy transforms of the grain path: uint8 [H, W, C] images to the model input.

The counterparts of `saol_jax.data.transforms` without TensorFlow. A train
transform draws its randomness from the generator it is given (seeded per
example by the caller), so an example's augmentation depends on that seed
alone. The same augmentations as tf.data, not the same pixels: the random
draws differ.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image

from saol_jax.data.discovery import DatasetFormatError
from saol_jax.data.transforms import AUGMENTATIONS

CIFAR_PAD = 4
GRAIN_AUGMENTATIONS = ("cifar", "none")


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 [H, W, C] -> uint8 [size[0], size[1], C], bilinear (antialiased when shrinking, as PIL does)."""
    planes = [Image.fromarray(image[..., c]).resize(size[::-1], Image.Resampling.BILINEAR)
              for c in range(image.shape[-1])]
    return np.stack([np.asarray(plane) for plane in planes], axis=-1)


def cifar_train(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Zero-pad CIFAR_PAD pixels, random crop back to the input size, random horizontal flip."""
    height, width = image.shape[:2]
    padded = np.pad(image, ((CIFAR_PAD, CIFAR_PAD), (CIFAR_PAD, CIFAR_PAD), (0, 0)))
    top, left = rng.integers(0, 2 * CIFAR_PAD + 1, size=2)
    crop = padded[top:top + height, left:left + width]
    return crop[:, ::-1] if rng.random() < 0.5 else crop


def _fitter(native: tuple[int | None, ...], shape: tuple[int, int, int]) -> Callable[[np.ndarray], np.ndarray]:
    """Resizes to the model input size unless the image already has it."""
    if tuple(native[:2]) == shape[:2]:
        return lambda image: image
    return lambda image: resize(image, shape[:2])


def train_transform(dataset_config, native, shape) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
    """(uint8 image, generator) -> augmented uint8 image of the model input shape."""
    augment = dataset_config.augment
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {augment!r}")
    if augment not in GRAIN_AUGMENTATIONS:
        raise DatasetFormatError(f"dataset.augment={augment!r} is not implemented for dataset.backend='grain' "
                                 f"(it has {', '.join(GRAIN_AUGMENTATIONS)}); use --config.dataset.backend=tfdata")
    fit = _fitter(native, shape)
    if augment == "cifar":
        return lambda image, rng: np.ascontiguousarray(cifar_train(fit(image), rng))
    return lambda image, rng: fit(image)


def eval_transform(native, shape) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 image -> uint8 image of the model input shape."""
    return _fitter(native, shape)
