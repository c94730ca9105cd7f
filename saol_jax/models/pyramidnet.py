"""Additive PyramidNet for CIFAR (Han et al. 2017), optionally with ShakeDrop
(Yamada et al. 2019).

Every residual block widens the network by alpha / (number of blocks)
channels; shortcuts are parameter-free (2x2 average pooling when
downsampling, zero-padded channels).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from saol_jax.models.layers import (
    ConvFactory,
    NormFactory,
    ShakeDrop,
    avg_pool_2x2,
    branch_layers,
    layer_factories,
    pad_channels,
    stage_features,
)


class BasicBranch(nnx.Module):
    """BN-conv3x3-BN-ReLU-conv3x3-BN: [B, H, W, C_in] -> [B, H/s, W/s, planes]."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int, *, conv: ConvFactory, norm: NormFactory):
        (self.conv1, self.conv2), (self.bn1, self.bn2, self.bn3) = branch_layers(
            conv, norm, (in_channels, planes, planes), kernels=(3, 3), strides=(stride, 1), pre_norm=True
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.conv1(self.bn1(x))
        y = self.conv2(nnx.relu(self.bn2(y)))
        return self.bn3(y)


class BottleneckBranch(nnx.Module):
    """BN-conv1x1-BN-ReLU-conv3x3-BN-ReLU-conv1x1-BN:
    [B, H, W, C_in] -> [B, H/s, W/s, 4·planes]."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int, *, conv: ConvFactory, norm: NormFactory):
        out_channels = planes * self.expansion
        (self.conv1, self.conv2, self.conv3), (self.bn1, self.bn2, self.bn3, self.bn4) = branch_layers(
            conv, norm, (in_channels, planes, planes, out_channels), kernels=(1, 3, 1), strides=(1, stride, 1),
            pre_norm=True,
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.conv1(self.bn1(x))
        y = self.conv2(nnx.relu(self.bn2(y)))
        y = self.conv3(nnx.relu(self.bn3(y)))
        return self.bn4(y)


class PyramidBlock(nnx.Module):
    """Residual branch (scaled by ShakeDrop) plus a parameter-free shortcut."""

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int,
        bottleneck: bool,
        drop_prob: float,
        *,
        conv: ConvFactory,
        norm: NormFactory,
    ):
        branch_cls = BottleneckBranch if bottleneck else BasicBranch
        self.branch = branch_cls(in_channels, planes, stride, conv=conv, norm=norm)
        self.shakedrop = ShakeDrop(drop_prob)
        self.stride = stride
        self.out_channels = planes * branch_cls.expansion

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """x: [B, H, W, C_in] -> [B, ceil(H/s), ceil(W/s), C_out]."""
        y = self.shakedrop(self.branch(x), rngs=rngs)
        shortcut = avg_pool_2x2(x) if self.stride == 2 else x
        return y + pad_channels(shortcut, self.out_channels).astype(y.dtype)


class PyramidNet(nnx.Module):
    """PyramidNet-depth with widening factor alpha, three stages (strides 1, 2, 2).

    n = (depth - 2) / 6 basic or (depth - 2) / 9 bottleneck blocks per stage;
    block l of L = 3n has round(16 + alpha·l / L) branch channels (x4 for
    bottlenecks). Stem conv3x3(16) + BN, final BN + ReLU. With `shakedrop`
    > 0, block l uses ShakeDrop with drop probability shakedrop·l / L
    (the linear rule of Yamada et al., reaching `shakedrop` at the last
    block), drawing from `rngs.dropout()` in training mode.
    """

    def __init__(
        self,
        depth: int,
        alpha: float,
        bottleneck: bool,
        shakedrop: float = 0.0,
        *,
        in_channels: int = 3,
        dtype: jnp.dtype = jnp.float32,
        ghost_size: int = 0,
        rngs: nnx.Rngs,
    ):
        layers_per_block = 9 if bottleneck else 6
        if (depth - 2) % layers_per_block or depth <= 2:
            raise ValueError(
                f"depth - 2 must be a positive multiple of {layers_per_block} "
                f"({'bottleneck' if bottleneck else 'basic'} blocks), got depth {depth}"
            )
        blocks_per_stage = (depth - 2) // layers_per_block
        num_blocks = 3 * blocks_per_stage
        stem_channels = 16
        conv, norm = layer_factories(dtype=dtype, ghost_size=ghost_size, init_mode="fan_out", rngs=rngs)
        self.stem_conv = conv(in_channels, stem_channels, 3)
        self.stem_bn = norm(stem_channels)
        stages = []
        stage_channels = []
        channels = stem_channels
        index = 0
        for s in range(3):
            blocks = []
            for b in range(blocks_per_stage):
                index += 1
                planes = int(round(stem_channels + alpha * index / num_blocks))
                block = PyramidBlock(
                    channels,
                    planes,
                    2 if s > 0 and b == 0 else 1,
                    bottleneck,
                    shakedrop * index / num_blocks,
                    conv=conv,
                    norm=norm,
                )
                blocks.append(block)
                channels = block.out_channels
            stages.append(nnx.List(blocks))
            stage_channels.append(channels)
        self.stages = nnx.List(stages)
        self.final_bn = norm(channels)
        self.stage_channels = tuple(stage_channels)
        self.stage_reductions = (1, 2, 4)

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> list[jax.Array]:
        """x: [B, H, W, C_in] -> per stage s: [B, H/2^s, W/2^s, stage_channels[s]];
        the last map is after the final BN + ReLU."""
        x = self.stem_bn(self.stem_conv(x))
        features = stage_features(self.stages, x, rngs=rngs)
        features[-1] = nnx.relu(self.final_bn(features[-1]))
        return features
