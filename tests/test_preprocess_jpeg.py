"""The fused decode-and-crop ImageNet train transform against decode-then-crop."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from saol_jax.data import preprocess


def photo_like_jpeg(seed: int, height: int = 75, width: int = 100) -> tf.Tensor:
    """A JPEG string of a smooth random colour field with noise (quality 90)."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (4, 5, 3)).astype(np.float32)
    image = tf.image.resize(coarse[None], (height, width), method="bicubic")[0].numpy()
    image = np.clip(image + rng.normal(0, 10, image.shape), 0, 255).astype(np.uint8)
    return tf.io.encode_jpeg(image, quality=90)


@pytest.mark.parametrize("jitter, lighting", [(0.0, 0.0), (0.4, 0.1)])
def test_fused_matches_decode_then_crop(jitter, lighting):
    # Same seed -> same crop window, flip and colour noise; only chroma upsampling at the
    # window's edge may differ by a few levels.
    for k in range(6):
        jpeg, seed = photo_like_jpeg(k), tf.constant([k, 7], tf.int64)
        fused = preprocess.inception_train_jpeg(jpeg, seed, 32, jitter, lighting).numpy()
        plain = preprocess.inception_train(tf.io.decode_jpeg(jpeg, channels=3), seed, 32, jitter, lighting).numpy()
        assert fused.shape == plain.shape == (32, 32, 3) and fused.dtype == np.uint8
        diff = np.abs(fused.astype(int) - plain.astype(int))
        assert diff.mean() < 0.5 and np.mean(diff > 0) < 0.05, (k, diff.mean(), np.mean(diff > 0))


def test_fused_windows_depend_on_the_seed():
    jpeg = photo_like_jpeg(0)
    outputs = [preprocess.inception_train_jpeg(jpeg, tf.constant([0, k], tf.int64), 32).numpy() for k in range(4)]
    assert all((outputs[0] != other).any() for other in outputs[1:])


def test_fused_grayscale_jpeg_gives_rgb():
    gray = tf.io.encode_jpeg(np.full((40, 50, 1), 128, np.uint8), quality=90)
    out = preprocess.inception_train_jpeg(gray, tf.constant([1, 2], tf.int64), 16, 0.4, 0.1)
    assert out.shape == (16, 16, 3)
