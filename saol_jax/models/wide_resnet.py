"""Wide ResNet (Zagoruyko & Komodakis 2016): pre-activation basic blocks,
1x1 projection shortcuts where the shape changes, dropout between convs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from saol_jax.models.layers import ConvFactory, NormFactory, layer_factories, stage_features


class WideBlock(nnx.Module):
    """BN-ReLU-conv3x3-BN-ReLU-dropout-conv3x3 plus a shortcut.

    The shortcut is the identity when the shape is kept, otherwise a strided
    conv1x1 applied to the pre-activated input (BN-ReLU output).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        dropout_rate: float,
        *,
        conv: ConvFactory,
        norm: NormFactory,
    ):
        self.bn1 = norm(in_channels)
        self.conv1 = conv(in_channels, out_channels, 3, stride)
        self.bn2 = norm(out_channels)
        self.dropout = nnx.Dropout(dropout_rate)
        self.conv2 = conv(out_channels, out_channels, 3)
        self.projection = (
            conv(in_channels, out_channels, 1, stride)
            if stride != 1 or in_channels != out_channels
            else None
        )

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """x: [B, H, W, C_in] -> [B, ceil(H/s), ceil(W/s), C_out]."""
        activated = nnx.relu(self.bn1(x))
        shortcut = x if self.projection is None else self.projection(activated)
        y = nnx.relu(self.bn2(self.conv1(activated)))
        y = self.conv2(self.dropout(y, rngs=rngs))
        return y + shortcut.astype(y.dtype)


class WideResNet(nnx.Module):
    """WRN-depth-k: stem conv3x3(16), three stages of n = (depth - 4) / 6
    blocks with 16k, 32k, 64k channels (strides 1, 2, 2), final BN + ReLU.

    Dropout (rate `dropout_rate`) draws from `rngs.dropout()` in training
    mode; `model.eval()` turns it off.
    """

    def __init__(
        self,
        depth: int = 28,
        widen_factor: int = 10,
        dropout_rate: float = 0.0,
        *,
        in_channels: int = 3,
        dtype: jnp.dtype = jnp.float32,
        ghost_size: int = 0,
        rngs: nnx.Rngs,
    ):
        if (depth - 4) % 6 or depth <= 4:
            raise ValueError(f"depth - 4 must be a positive multiple of 6, got depth {depth}")
        blocks_per_stage = (depth - 4) // 6
        widths = tuple(c * widen_factor for c in (16, 32, 64))
        self.stage_channels = widths
        self.stage_reductions = (1, 2, 4)
        conv, norm = layer_factories(dtype=dtype, ghost_size=ghost_size, init_mode="fan_out", rngs=rngs)
        self.stem_conv = conv(in_channels, 16, 3)
        stages = []
        channels = 16
        for s, width in enumerate(widths):
            blocks = []
            for b in range(blocks_per_stage):
                stride = 2 if s > 0 and b == 0 else 1
                blocks.append(WideBlock(channels, width, stride, dropout_rate, conv=conv, norm=norm))
                channels = width
            stages.append(nnx.List(blocks))
        self.stages = nnx.List(stages)
        self.final_bn = norm(channels)

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> list[jax.Array]:
        """x: [B, H, W, C_in] -> per stage s: [B, H/2^s, W/2^s, 16k·2^s]; the
        last map is after the final BN + ReLU."""
        x = self.stem_conv(x)
        features = stage_features(self.stages, x, rngs=rngs)
        features[-1] = nnx.relu(self.final_bn(features[-1]))
        return features
