"""ConvNeXt (Liu et al. 2022) as a SAOL backbone, laid out like timm's `ConvNeXt` so that
timm's weights load (saol_jax.commands.convert_timm).

Stem conv s x s (stride s) + LN; stages 2-4 start with LN + conv 2x2 stride 2;
blocks are depthwise conv 7x7 - LN - MLP x4 (GELU) - layer scale (init 1e-6,
an option) + residual under stochastic depth. The last S stages feed SAOL's
decoder as for the ResNets. GAP-FC follows timm's head: mean over the last map, then a
LayerNorm (`head_norm`, part of the backbone so pretrained weights keep it),
then the classifier.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from saol_jax.models.modern import WEIGHT_INIT, DropPath, Mlp, PooledFeatures, drop_path_rates, layer_norm

LAYER_SCALE_INIT = 1e-6


def _conv(in_channels: int, out_channels: int, kernel: int, stride: int, *, groups: int = 1,
          dtype: jnp.dtype, rngs: nnx.Rngs) -> nnx.Conv:
    """A biased conv, padding k // 2 for stride 1 (the 7x7 depthwise) and none when strided."""
    pad = kernel // 2 if stride == 1 else 0
    return nnx.Conv(in_channels, out_channels, (kernel, kernel), strides=(stride, stride),
                    padding=((pad, pad), (pad, pad)), feature_group_count=groups, dtype=dtype,
                    param_dtype=jnp.float32, kernel_init=WEIGHT_INIT, rngs=rngs)


class Block(nnx.Module):
    """x + drop_path(gamma * mlp(LN(dwconv7x7(x)))): [B, H, W, C] -> same."""

    def __init__(self, dim: int, drop_path: float, *, layer_scale_init: float, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.conv_dw = _conv(dim, dim, 7, 1, groups=dim, dtype=dtype, rngs=rngs)
        self.norm = layer_norm(dim, dtype=dtype, rngs=rngs)
        self.mlp = Mlp(dim, 4 * dim, dtype=dtype, rngs=rngs)
        self.gamma = nnx.Param(jnp.full((dim,), layer_scale_init, jnp.float32))
        self.drop_path = DropPath(drop_path)

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        y = self.mlp(self.norm(self.conv_dw(x))) * self.gamma[...].astype(x.dtype)
        return x + self.drop_path(y, rngs=rngs)


class Downsample(nnx.Module):
    """LN then conv 2x2 stride 2: [B, H, W, C_in] -> [B, H/2, W/2, C_out]."""

    def __init__(self, in_channels: int, out_channels: int, *, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.norm = layer_norm(in_channels, dtype=dtype, rngs=rngs)
        self.conv = _conv(in_channels, out_channels, 2, 2, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.conv(self.norm(x))


class Stage(nnx.Module):
    """An optional Downsample, then `depth` blocks."""

    def __init__(self, in_channels: int, dim: int, rates: Sequence[float], *, downsample: bool,
                 layer_scale_init: float, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.downsample = Downsample(in_channels, dim, dtype=dtype, rngs=rngs) if downsample else None
        self.blocks = nnx.List([Block(dim, rate, layer_scale_init=layer_scale_init, dtype=dtype, rngs=rngs)
                                  for rate in rates])

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        if self.downsample is not None:
            x = self.downsample(x)
        for block in self.blocks:
            x = block(x, rngs=rngs)
        return x


class ConvNeXt(nnx.Module):
    """ConvNeXt with `depths` blocks and `dims` channels per stage; T = (3,3,9,3) x (96,192,384,768),
    S = (3,3,27,3) x the same, B = (3,3,27,3) x (128,256,512,1024), stem stride 4.
    `layer_scale_init` is the blocks' initial gamma (timm's 1e-6 by default)."""

    def __init__(
        self,
        *,
        depths: Sequence[int],
        dims: Sequence[int],
        stem_stride: int = 4,
        drop_path_rate: float = 0.0,
        layer_scale_init: float = LAYER_SCALE_INIT,
        in_channels: int = 3,
        dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        if len(depths) != len(dims):
            raise ValueError(f"depths {tuple(depths)} and dims {tuple(dims)} must have the same length")
        self.stage_channels = tuple(dims)
        self.stage_reductions = tuple(stem_stride * 2**s for s in range(len(dims)))
        self.stem_conv = _conv(in_channels, dims[0], stem_stride, stem_stride, dtype=dtype, rngs=rngs)
        self.stem_norm = layer_norm(dims[0], dtype=dtype, rngs=rngs)
        rates = drop_path_rates(drop_path_rate, sum(depths))
        stages, start, channels = [], 0, dims[0]
        for s, (depth, dim) in enumerate(zip(depths, dims)):
            stages.append(Stage(channels, dim, rates[start:start + depth], downsample=s > 0,
                                layer_scale_init=layer_scale_init, dtype=dtype, rngs=rngs))
            start, channels = start + depth, dim
        self.stages = nnx.List(stages)
        self.head_norm = layer_norm(dims[-1], dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> PooledFeatures:
        """x: [B, H, W, C_in] -> per stage s: [B, H/r_s, W/r_s, dims[s]] (r_s = stage_reductions[s]),
        with `pooled` = LN(mean of the last map) [B, dims[-1]], float32."""
        x = self.stem_norm(self.stem_conv(x))
        features = []
        for stage in self.stages:
            x = stage(x, rngs=rngs)
            features.append(x)
        pooled = self.head_norm(x.astype(jnp.float32).mean(axis=(1, 2)).astype(x.dtype))
        return PooledFeatures(features, pooled.astype(jnp.float32))
