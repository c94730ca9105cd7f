"""Output layers: the GAP-FC baseline, the Spatially Attentive Output Layer and its decoder.

The heads take the list of backbone stage features (NHWC) and return float32
results whatever the activation dtype. docs/method.md §2-§3 describes them;
widths, kernel sizes and the number of fused stages are arguments.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from saol_jax.models.layers import ConvFactory, NormFactory, layer_factories


class GapFcHead(nnx.Module):
    """Global average pooling followed by a linear classifier (docs/method.md §2)."""

    def __init__(self, in_features: int, num_classes: int, *, rngs: nnx.Rngs):
        self.fc = nnx.Linear(in_features, num_classes, param_dtype=jnp.float32, rngs=rngs)

    def __call__(self, last: jax.Array) -> jax.Array:
        """last: [B, H, W, C] -> logits [B, K] (float32)."""
        pooled = last.astype(jnp.float32).mean(axis=(1, 2))
        return self.fc(pooled)

    def cam(self, last: jax.Array) -> jax.Array:
        """last: [B, H, W, C] -> class activation maps [B, H, W, K]: the layer at every cell.

        Their mean over cells is the logits (the layer is linear).
        """
        return self.fc(last.astype(jnp.float32))


def resize_to_grid(x: jax.Array, grid_hw: tuple[int, int]) -> jax.Array:
    """Resize [B, H, W, C] to [B, Ho, Wo, C].

    Average pooling when H and W are integer multiples of the grid, otherwise
    bilinear interpolation without antialiasing (docs/method.md §3.2).
    """
    batch, h, w, c = x.shape
    ho, wo = grid_hw
    if (h, w) == (ho, wo):
        return x
    if h % ho == 0 and w % wo == 0:
        pooled = x.astype(jnp.float32).reshape(batch, ho, h // ho, wo, w // wo, c).mean((2, 4))
        return pooled.astype(x.dtype)
    return jax.image.resize(x, (batch, ho, wo, c), method="bilinear", antialias=False)


class ConvBnRelu(nnx.Module):
    """conv(k) without bias, BatchNorm, ReLU; keeps the spatial size."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int, *, conv: ConvFactory, norm: NormFactory):
        self.conv = conv(in_features, out_features, kernel_size)
        self.bn = norm(out_features)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.relu(self.bn(self.conv(x)))


def check_num_stages(num_stages: int, stage_channels: Sequence[int]) -> None:
    """Raises ValueError unless 1 <= num_stages <= the backbone's stage count."""
    if not 1 <= num_stages <= len(stage_channels):
        raise ValueError(
            f"num_stages={num_stages} must be between 1 and the backbone's "
            f"{len(stage_channels)} stages"
        )


def stage_projections(
    stage_channels: Sequence[int], num_stages: int, mid_width: int, *, conv: ConvFactory, norm: NormFactory
) -> nnx.List:
    """The decoder's 1x1 ConvBnRelu to `mid_width` for each of the last `num_stages` stages (§3.2)."""
    return nnx.List([ConvBnRelu(c, mid_width, 1, conv=conv, norm=norm) for c in stage_channels[-num_stages:]])


def fuse_stages(features: Sequence[jax.Array], projections: nnx.List) -> jax.Array:
    """The decoder's fused features [B, Ho, Wo, S * C_mid] on the last stage's grid.

    Each of the last S = len(projections) stage maps [B, H_s, W_s, C_s] is
    resized to the last stage's Ho x Wo, projected, and the S results are
    concatenated on channels.
    """
    grid_hw = features[-1].shape[1:3]
    stages = features[len(features) - len(projections):]
    return jnp.concatenate(
        [project(resize_to_grid(f, grid_hw)) for f, project in zip(stages, projections)], axis=-1
    )


class MultiScaleDecoder(nnx.Module):
    """The SAOL head's multi-scale decoder alone (the same stages, projections and fusion).

    With a GAP-FC classifier on its output it is the `gap_ms` control of the
    ablation ladder (docs/method.md §8): SAOL's features without SAOL's attention.
    """

    def __init__(
        self,
        stage_channels: Sequence[int],
        *,
        num_stages: int,
        mid_width: int,
        dtype: jnp.dtype = jnp.float32,
        ghost_size: int = 0,
        rngs: nnx.Rngs,
    ):
        check_num_stages(num_stages, stage_channels)
        conv, norm = layer_factories(dtype=dtype, ghost_size=ghost_size, init_mode="fan_out", rngs=rngs)
        self.width = num_stages * mid_width
        self.projections = stage_projections(stage_channels, num_stages, mid_width, conv=conv, norm=norm)

    def __call__(self, features: Sequence[jax.Array]) -> jax.Array:
        """features: stage maps [B, H_s, W_s, C_s] -> fused [B, Ho, Wo, S * C_mid]."""
        return fuse_stages(features, self.projections)


class SaolHead(nnx.Module):
    """Spatially Attentive Output Layer (docs/method.md §3).

    Attention branch on the last stage: ConvBnRelu(k_att, C_att) then a
    zero-initialised 1x1 conv to one channel, softmax over all positions.
    Spatial-logit branch: each of the last `num_stages` stages is resized to
    the output grid, projected by a 1x1 ConvBnRelu to `mid_width`,
    concatenated and classified per position by a 1x1 conv, softmax over
    classes. The output is y_hat_k = sum_ij A_ij Y_kij, computed in log space.

    `attention_floor` eps in [0, 1) replaces A by (1 - eps) A + eps / (Ho Wo):
    at least eps of the attention's mass is spread evenly over the grid, so
    the output reads every cell. 0 is the paper's head; the
    floor is an intervention for measuring what a concentrated attention
    costs (docs/method.md §3.6).

    The settings have no defaults here: they are `config.model.saol`'s, set
    in the recipe base config (saol_jax.core.recipe).
    """

    def __init__(
        self,
        stage_channels: Sequence[int],
        num_classes: int,
        *,
        num_stages: int,
        att_kernel: int,
        att_width: int,
        mid_width: int,
        attention_floor: float,
        dtype: jnp.dtype = jnp.float32,
        ghost_size: int = 0,
        rngs: nnx.Rngs,
    ):
        if not 0.0 <= attention_floor < 1.0:
            raise ValueError(f"attention_floor={attention_floor} must be in [0, 1)")
        check_num_stages(num_stages, stage_channels)
        self.num_stages = num_stages
        self.attention_floor = attention_floor
        conv, norm = layer_factories(dtype=dtype, ghost_size=ghost_size, init_mode="fan_out", rngs=rngs)
        self.att_hidden = ConvBnRelu(stage_channels[-1], att_width, att_kernel, conv=conv, norm=norm)
        self.att_out = nnx.Conv(
            att_width, 1, kernel_size=(1, 1), use_bias=True, dtype=dtype,
            param_dtype=jnp.float32, kernel_init=nnx.initializers.zeros, rngs=rngs,
        )
        self.projections = stage_projections(stage_channels, num_stages, mid_width, conv=conv, norm=norm)
        self.classifier = nnx.Conv(
            num_stages * mid_width, num_classes, kernel_size=(1, 1), use_bias=True,
            dtype=dtype, param_dtype=jnp.float32, rngs=rngs,
        )

    def __call__(self, features: Sequence[jax.Array]) -> dict[str, jax.Array]:
        """features: stage maps [B, H_s, W_s, C_s], the last on the output grid.

        Returns float32 `log_attention` [B, Ho, Wo], `log_spatial`
        [B, Ho, Wo, K] and `log_probs` [B, K] (log y_hat).
        """
        last = features[-1]
        batch, ho, wo, _ = last.shape
        scores = self.att_out(self.att_hidden(last))[..., 0].astype(jnp.float32)
        log_attention = jax.nn.log_softmax(scores.reshape(batch, ho * wo), axis=-1)
        log_attention = log_attention.reshape(batch, ho, wo)
        if self.attention_floor > 0.0:
            floor = self.attention_floor
            log_attention = jnp.logaddexp(jnp.log1p(-floor) + log_attention, jnp.log(floor / (ho * wo)))

        fused = fuse_stages(features, self.projections)
        log_spatial = jax.nn.log_softmax(self.classifier(fused).astype(jnp.float32), axis=-1)
        log_probs = jax.nn.logsumexp(log_attention[..., None] + log_spatial, axis=(1, 2))
        return {
            "log_attention": log_attention,
            "log_spatial": log_spatial,
            "log_probs": log_probs,
        }
