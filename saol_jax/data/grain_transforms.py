"""Per-example numpy transforms of the grain path: uint8 [H, W, C] images to the model input.

The counterparts of `saol_jax.data.transforms` without TensorFlow. A train
transform draws its randomness from the generator it is given (seeded per
example by the caller), so an example's augmentation depends on that seed
alone. The same augmentations as tf.data (`saol_jax.data.preprocess`), not
the same pixels: the random draws and the resizing filters differ.

The Inception-style train transform takes the encoded image (the train
source skips tfds's decoding for it, see `decodes_itself`) and works on
uint8 in Pillow's C code throughout: it decodes a JPEG at 1/2, 1/4 or 1/8
scale where the crop keeps at least the output size (`Image.draft`), crops
and resizes in one call, and applies colour jitter and lighting as one affine
colour map.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageStat

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


def decode_crop(encoded: bytes, rng: np.random.Generator, size: int, channels: int) -> Image.Image:
    """A random-resized-crop of an encoded image, decoded at the smallest scale that still gives
    the crop `size` pixels a side (JPEG only; other formats are decoded whole), resized to size x size."""
    with Image.open(io.BytesIO(encoded)) as image:
        width, height = image.size
        top, left, crop_h, crop_w = crop_window(height, width, rng)
        image.draft("RGB" if channels == 3 else "L", (math.ceil(width * size / crop_w),
                                                      math.ceil(height * size / crop_h)))
        scale_x, scale_y = image.size[0] / width, image.size[1] / height
        box = (left * scale_x, top * scale_y, (left + crop_w) * scale_x, (top + crop_h) * scale_y)
        mode = "RGB" if channels == 3 else "L"
        image = image if image.mode == mode else image.convert(mode)
        return image.resize((size, size), Image.Resampling.BILINEAR, box=box)


def _gray_weights(channels: int) -> np.ndarray:
    """Luma weights of an image with `channels` channels (1: the image is its own luma)."""
    return np.asarray(_GRAY_WEIGHTS if channels == 3 else (1.0,), np.float64)


def color_jitter(matrix: np.ndarray, offset: np.ndarray, mean: np.ndarray, strength: float,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Brightness, contrast and saturation in a random order, factors 1 +- strength, composed onto the
    affine colour map x -> matrix @ x + offset of an image whose mean colour is `mean`.

    Each is a blend with a target (black, the mean grey, the pixel's grey), so the composition is
    one affine map; no clipping between the steps, as in the float transforms.
    """
    factors = rng.uniform(max(0.0, 1.0 - strength), 1.0 + strength, size=3)
    gray = _gray_weights(len(mean))
    for k in rng.permutation(3):
        f = factors[k]
        if k == 0:  # brightness
            matrix, offset = f * matrix, f * offset
        elif k == 1:  # contrast: towards the image's mean grey
            mean_gray = gray @ (matrix @ mean + offset)
            matrix, offset = f * matrix, f * offset + (1.0 - f) * mean_gray
        else:  # saturation: towards each pixel's grey
            blend = f * np.eye(len(mean)) + (1.0 - f) * np.outer(np.ones(len(mean)), gray)
            matrix, offset = blend @ matrix, blend @ offset
    return matrix, offset


def pca_lighting(channels: int, alpha_std: float, rng: np.random.Generator) -> np.ndarray:
    """AlexNet-style PCA lighting noise: the per-channel offset (0-255 scale) to add to an RGB image."""
    if channels != 3:
        raise ValueError(f"PCA lighting needs RGB images, got {channels} channels")
    alpha = rng.normal(0.0, alpha_std, size=3)
    return 255.0 * (np.asarray(IMAGENET_EIGVEC) @ (alpha * np.asarray(IMAGENET_EIGVAL)))


def apply_affine(image: Image.Image, matrix: np.ndarray, offset: np.ndarray) -> Image.Image:
    """x -> matrix @ x + offset per pixel, rounded and clipped to uint8, in one pass of Pillow's C code."""
    if image.mode == "RGB":
        return image.convert("RGB", tuple(np.concatenate([matrix, offset[:, None]], axis=1).reshape(-1)))
    return image.point(to_uint8(matrix[0, 0] * np.arange(256.0) + offset[0]).tolist())


def inception_train(encoded: bytes, rng: np.random.Generator, size: int, jitter: float = 0.0,
                    lighting: float = 0.0, channels: int = 3) -> np.ndarray:
    """Random-resized-crop to `size`, flip, optional colour jitter and PCA lighting.

    Encoded image (JPEG, PNG, ...) in, uint8 [size, size, channels] out. Jitter and
    lighting are one affine colour map, applied once.
    """
    out = decode_crop(encoded, rng, size, channels)
    if rng.random() < 0.5:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    matrix, offset = np.eye(channels), np.zeros(channels)
    if jitter > 0:
        mean = np.asarray(ImageStat.Stat(out).mean, np.float64)
        matrix, offset = color_jitter(matrix, offset, mean, jitter, rng)
    if lighting > 0:
        offset = offset + pca_lighting(channels, lighting, rng)
    if jitter > 0 or lighting > 0:
        out = apply_affine(out, matrix, offset)
    return np.asarray(out).reshape(size, size, channels)


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


def decodes_itself(dataset_config) -> bool:
    """Whether the train transform takes the encoded image (tfds's decoding skipped) rather than uint8 pixels."""
    return dataset_config.augment == "inception"


def train_transform(dataset_config, native, shape) -> Callable[[np.ndarray | bytes, np.random.Generator], np.ndarray]:
    """(image, generator) -> augmented uint8 image of the model input shape; the image is encoded
    bytes where `decodes_itself`, else uint8 [H, W, C]."""
    augment = dataset_config.augment
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {augment!r}")
    if augment == "inception":
        return lambda encoded, rng: inception_train(encoded, rng, shape[0], dataset_config.color_jitter,
                                                    dataset_config.lighting, shape[-1])
    fit = _fitter(native, shape)
    if augment == "cifar":
        return lambda image, rng: np.ascontiguousarray(cifar_train(fit(image), rng))
    return lambda image, rng: fit(image)


def eval_transform(dataset_config, native, shape) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 image -> uint8 image of the model input shape (resized, or centre-cropped with `eval_resize`)."""
    if dataset_config.eval_resize:
        return lambda image: resize_center_crop(image, shape[0])
    return _fitter(native, shape)
