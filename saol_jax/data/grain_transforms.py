"""Per-example numpy transforms of the grain path: uint8 [H, W, C] images to the model input.

The counterparts of `saol_jax.data.transforms` without TensorFlow. A train
transform draws its randomness from the generator it is given (seeded per
example by the caller), so an example's augmentation depends on that seed
alone. The same augmentations as tf.data (`saol_jax.data.preprocess`), not
the same pixels: the random draws and the resizing filters differ.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image

from saol_jax.data.preprocess import _GRAY_WEIGHTS, IMAGENET_EIGVAL, IMAGENET_EIGVEC
from saol_jax.data.transforms import AUGMENTATIONS

CIFAR_PAD = 4
CROP_AREA = (0.08, 1.0)  # random-resized-crop: fraction of the image area
CROP_RATIO = (3 / 4, 4 / 3)  # and aspect ratio (width / height)
CROP_ATTEMPTS = 10


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 [H, W, C] -> uint8 [size[0], size[1], C], bilinear (antialiased when shrinking, as PIL does)."""
    planes = [Image.fromarray(image[..., c]).resize(size[::-1], Image.Resampling.BILINEAR)
              for c in range(image.shape[-1])]
    return np.stack([np.asarray(plane) for plane in planes], axis=-1)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Rounds a float image on the [0, 255] scale to uint8, clipping first."""
    return np.round(np.clip(image, 0.0, 255.0)).astype(np.uint8)


def cifar_train(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Zero-pad CIFAR_PAD pixels, random crop back to the input size, random horizontal flip."""
    height, width = image.shape[:2]
    padded = np.pad(image, ((CIFAR_PAD, CIFAR_PAD), (CIFAR_PAD, CIFAR_PAD), (0, 0)))
    top, left = rng.integers(0, 2 * CIFAR_PAD + 1, size=2)
    crop = padded[top:top + height, left:left + width]
    return crop[:, ::-1] if rng.random() < 0.5 else crop


def crop_window(height: int, width: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(top, left, crop height, crop width) of a random-resized-crop: area 0.08-1, ratio 3/4-4/3.

    The whole image when CROP_ATTEMPTS draws do not fit.
    """
    for _ in range(CROP_ATTEMPTS):
        area = height * width * rng.uniform(*CROP_AREA)
        ratio = np.exp(rng.uniform(*np.log(CROP_RATIO)))
        crop_h, crop_w = int(round(np.sqrt(area / ratio))), int(round(np.sqrt(area * ratio)))
        if 0 < crop_h <= height and 0 < crop_w <= width:
            return int(rng.integers(0, height - crop_h + 1)), int(rng.integers(0, width - crop_w + 1)), crop_h, crop_w
    return 0, 0, height, width


def _grayscale(image: np.ndarray) -> np.ndarray:
    """Luma of an RGB image (the image itself if it has one channel), keeping a channel axis."""
    if image.shape[-1] == 1:
        return image
    return image @ np.asarray(_GRAY_WEIGHTS, np.float32)[:, None]


def color_jitter(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast and saturation (float [0, 1] image) in a random order, factors 1 +- strength."""
    factors = rng.uniform(max(0.0, 1.0 - strength), 1.0 + strength, size=3)
    targets = (lambda x: 0.0, lambda x: _grayscale(x).mean(), _grayscale)
    for k in rng.permutation(3):
        image = factors[k] * image + (1.0 - factors[k]) * targets[k](image)
    return image


def pca_lighting(image: np.ndarray, alpha_std: float, rng: np.random.Generator) -> np.ndarray:
    """AlexNet-style PCA lighting noise on an RGB image in [0, 1]."""
    if image.shape[-1] != 3:
        raise ValueError(f"PCA lighting needs RGB images, got {image.shape[-1]} channels")
    alpha = rng.normal(0.0, alpha_std, size=3)
    return image + np.asarray(IMAGENET_EIGVEC) @ (alpha * np.asarray(IMAGENET_EIGVAL))


def inception_train(image: np.ndarray, rng: np.random.Generator, size: int, jitter: float = 0.0,
                    lighting: float = 0.0) -> np.ndarray:
    """Random-resized-crop to `size`, flip, optional colour jitter and PCA lighting; uint8 in and out."""
    top, left, crop_h, crop_w = crop_window(*image.shape[:2], rng)
    out = resize(image[top:top + crop_h, left:left + crop_w], (size, size)).astype(np.float32) / 255.0
    if rng.random() < 0.5:
        out = out[:, ::-1]
    if jitter > 0:
        out = color_jitter(out, jitter, rng)
    if lighting > 0:
        out = pca_lighting(out, lighting, rng)
    return to_uint8(out * 255.0)


def resize_center_crop(image: np.ndarray, size: int, crop_fraction: float = 0.875) -> np.ndarray:
    """Resizes the shorter side to round(size / crop_fraction), then takes the central size x size crop."""
    shorter = round(size / crop_fraction)
    height, width = image.shape[:2]
    scale = shorter / min(height, width)
    new_h, new_w = max(round(height * scale), shorter), max(round(width * scale), shorter)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return resize(image, (new_h, new_w))[top:top + size, left:left + size]


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
    if augment == "inception":
        return lambda image, rng: inception_train(image, rng, shape[0], dataset_config.color_jitter,
                                                  dataset_config.lighting)
    fit = _fitter(native, shape)
    if augment == "cifar":
        return lambda image, rng: np.ascontiguousarray(cifar_train(fit(image), rng))
    return lambda image, rng: fit(image)


def eval_transform(dataset_config, native, shape) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 image -> uint8 image of the model input shape (resized, or centre-cropped with `eval_resize`)."""
    if dataset_config.eval_resize:
        return lambda image: resize_center_crop(image, shape[0])
    return _fitter(native, shape)
