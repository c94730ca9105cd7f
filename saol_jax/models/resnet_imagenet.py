"""ImageNet ResNet v1.5 (He et al. 2016 with the stride of bottlenecks in the
3x3 conv), as torchvision builds it: fan-out He init, projection shortcuts
conv1x1 + BN, the last BN of every residual branch zero-initialised so each
block starts as (ReLU of) its shortcut."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from saol_jax.models.layers import ConvFactory, NormFactory, branch_layers, layer_factories, stage_features

_ZERO_SCALE = {"scale_init": nnx.initializers.zeros}  # each block starts as its shortcut


class Projection(nnx.Module):
    """Strided conv1x1 + BN shortcut: [B, H, W, C_in] -> [B, H/s, W/s, C_out]."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, *, conv: ConvFactory, norm: NormFactory):
        self.conv = conv(in_channels, out_channels, 1, stride)
        self.bn = norm(out_channels)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.bn(self.conv(x))


def _shortcut(
    in_channels: int,
    out_channels: int,
    stride: int,
    *,
    conv: ConvFactory,
    norm: NormFactory,
) -> Projection | None:
    """A projection when the shape changes, else None (identity)."""
    if stride == 1 and in_channels == out_channels:
        return None
    return Projection(in_channels, out_channels, stride, conv=conv, norm=norm)


class BasicBlock(nnx.Module):
    """conv3x3-BN-ReLU-conv3x3-BN(zero-init) + shortcut, then ReLU."""

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int, *, conv: ConvFactory, norm: NormFactory):
        (self.conv1, self.conv2), (self.bn1, self.bn2) = branch_layers(
            conv, norm, (in_channels, width, width), kernels=(3, 3), strides=(stride, 1), last_norm=_ZERO_SCALE
        )
        self.shortcut = _shortcut(in_channels, width, stride, conv=conv, norm=norm)

    def __call__(self, x: jax.Array) -> jax.Array:
        """x: [B, H, W, C_in] -> [B, H/s, W/s, width]."""
        y = nnx.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        shortcut = x if self.shortcut is None else self.shortcut(x)
        return nnx.relu(y + shortcut.astype(y.dtype))


class Bottleneck(nnx.Module):
    """conv1x1-BN-ReLU-conv3x3(stride)-BN-ReLU-conv1x1-BN(zero-init) + shortcut, then ReLU."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int, *, conv: ConvFactory, norm: NormFactory):
        out_channels = width * self.expansion
        (self.conv1, self.conv2, self.conv3), (self.bn1, self.bn2, self.bn3) = branch_layers(
            conv, norm, (in_channels, width, width, out_channels), kernels=(1, 3, 1), strides=(1, stride, 1),
            last_norm=_ZERO_SCALE,
        )
        self.shortcut = _shortcut(in_channels, out_channels, stride, conv=conv, norm=norm)

    def __call__(self, x: jax.Array) -> jax.Array:
        """x: [B, H, W, C_in] -> [B, H/s, W/s, 4·width]."""
        y = nnx.relu(self.bn1(self.conv1(x)))
        y = nnx.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        shortcut = x if self.shortcut is None else self.shortcut(x)
        return nnx.relu(y + shortcut.astype(y.dtype))


class ResNetImageNet(nnx.Module):
    """ResNet with four stages of widths 64, 128, 256, 512 (x4 for
    bottlenecks) and `block_sizes` blocks; stem conv7x7/2 + BN + ReLU +
    maxpool 3x3/2. (2,2,2,2) basic = ResNet-18, (3,4,6,3) basic = ResNet-34,
    (3,4,6,3) / (3,4,23,3) / (3,8,36,3) bottleneck = ResNet-50/101/152.
    """

    def __init__(
        self,
        block_sizes: Sequence[int],
        bottleneck: bool,
        *,
        in_channels: int = 3,
        dtype: jnp.dtype = jnp.float32,
        ghost_size: int = 0,
        rngs: nnx.Rngs,
    ):
        block_cls = Bottleneck if bottleneck else BasicBlock
        widths = tuple(64 * 2**s for s in range(len(block_sizes)))
        self.stage_channels = tuple(w * block_cls.expansion for w in widths)
        self.stage_reductions = tuple(4 * 2**s for s in range(len(block_sizes)))
        conv, norm = layer_factories(dtype=dtype, ghost_size=ghost_size, init_mode="fan_out", rngs=rngs)
        self.stem_conv = conv(in_channels, 64, 7, 2)
        self.stem_bn = norm(64)
        stages = []
        channels = 64
        for s, (width, size) in enumerate(zip(widths, block_sizes)):
            blocks = []
            for b in range(size):
                stride = 2 if s > 0 and b == 0 else 1
                blocks.append(block_cls(channels, width, stride, conv=conv, norm=norm))
                channels = width * block_cls.expansion
            stages.append(nnx.List(blocks))
        self.stages = nnx.List(stages)

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> list[jax.Array]:
        """x: [B, H, W, C_in] -> per stage s: [B, H/(4·2^s), W/(4·2^s), stage_channels[s]].

        `rngs` is unused (no stochastic layers); it keeps the common interface.
        """
        x = nnx.relu(self.stem_bn(self.stem_conv(x)))
        x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        features = stage_features(self.stages, x)
        return features
