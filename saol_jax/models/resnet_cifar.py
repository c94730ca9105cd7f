"""CIFAR ResNet (He et al. 2016, section 4.2): post-activation basic blocks
with parameter-free option-A shortcuts."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from saol_jax.models.layers import ConvFactory, NormFactory, layer_factories, pad_channels, stage_features


class BasicBlock(nnx.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, added to an option-A shortcut, then ReLU.

    Option A: spatial subsampling x[:, ::s, ::s] and zero-padded channels,
    so the shortcut has no parameters.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, *, conv: ConvFactory, norm: NormFactory):
        self.stride = stride
        self.out_channels = out_channels
        self.conv1 = conv(in_channels, out_channels, 3, stride)
        self.bn1 = norm(out_channels)
        self.conv2 = conv(out_channels, out_channels, 3)
        self.bn2 = norm(out_channels)

    def __call__(self, x: jax.Array) -> jax.Array:
        """x: [B, H, W, C_in] -> [B, ceil(H/s), ceil(W/s), C_out]."""
        y = nnx.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        shortcut = pad_channels(x[:, :: self.stride, :: self.stride], self.out_channels)
        return nnx.relu(y + shortcut.astype(y.dtype))


class ResNetCifar(nnx.Module):
    """ResNet-(2 + 2n·S) for small images, S = len(widths) stages of n blocks.

    Stem conv3x3(widths[0]) + BN + ReLU; stage s halves the resolution
    (except the first) and has widths[s] channels. The defaults give He et
    al.'s ResNet-20/56/110 for depth 20/56/110 (n = (depth - 2) / 6).
    """

    def __init__(
        self,
        depth: int,
        widths: Sequence[int] = (16, 32, 64),
        *,
        in_channels: int = 3,
        dtype: jnp.dtype = jnp.float32,
        ghost_size: int = 0,
        rngs: nnx.Rngs,
    ):
        widths = tuple(int(w) for w in widths)
        if (depth - 2) % (2 * len(widths)) or depth <= 2:
            raise ValueError(
                f"depth - 2 must be a positive multiple of {2 * len(widths)}, got depth {depth}"
            )
        blocks_per_stage = (depth - 2) // (2 * len(widths))
        self.stage_channels = widths
        self.stage_reductions = tuple(2**s for s in range(len(widths)))
        conv, norm = layer_factories(dtype=dtype, ghost_size=ghost_size, init_mode="fan_in", rngs=rngs)
        self.stem_conv = conv(in_channels, widths[0], 3)
        self.stem_bn = norm(widths[0])
        stages = []
        channels = widths[0]
        for s, width in enumerate(widths):
            blocks = []
            for b in range(blocks_per_stage):
                stride = 2 if s > 0 and b == 0 else 1
                blocks.append(BasicBlock(channels, width, stride, conv=conv, norm=norm))
                channels = width
            stages.append(nnx.List(blocks))
        self.stages = nnx.List(stages)

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> list[jax.Array]:
        """x: [B, H, W, C_in] -> per stage s: [B, H/2^s, W/2^s, widths[s]].

        `rngs` is unused (no stochastic layers); it keeps the common interface.
        """
        x = nnx.relu(self.stem_bn(self.stem_conv(x)))
        features = stage_features(self.stages, x)
        return features
