"""The model's input convention: uint8 images become normalised floats on device.

Images travel as uint8 from the host (a quarter of float32's bytes); the
train step, the eval step and the restored model all normalise with this one
function so that a model sees the same inputs in training and in the tools.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

# ImageNet's per-channel mean and std of images scaled to [0, 1] (what torchvision's weights expect).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalise(images: jax.Array, mean: Sequence[float], std: Sequence[float], dtype: jnp.dtype) -> jax.Array:
    """uint8 [B, H, W, C] -> (x / 255 - mean) / std in `dtype`."""
    x = images.astype(jnp.float32) / 255.0
    x = (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
    return x.astype(dtype)
