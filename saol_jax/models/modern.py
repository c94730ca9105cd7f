"""Layers of the LayerNorm / GELU backbones (ViT, ConvNeXt), channels-last.

The CNNs' conv and norm factories (saol_jax.models.layers) make bias-free
convs and BatchNorms; these backbones need biased layers, LayerNorm with
timm's eps 1e-6 and stochastic depth, so their pieces live here.
Initialisation follows timm: truncated normal (std 0.02) weights, zero biases.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

LN_EPS = 1e-6  # timm's LayerNorm eps for ViT and ConvNeXt
WEIGHT_INIT = nnx.initializers.truncated_normal(stddev=0.02)


def linear(in_features: int, out_features: int, *, dtype: jnp.dtype, rngs: nnx.Rngs) -> nnx.Linear:
    """A biased dense layer with float32 params and `dtype` compute."""
    return nnx.Linear(in_features, out_features, dtype=dtype, param_dtype=jnp.float32,
                      kernel_init=WEIGHT_INIT, rngs=rngs)


def layer_norm(features: int, *, dtype: jnp.dtype, rngs: nnx.Rngs) -> nnx.LayerNorm:
    """LayerNorm over the last (channel) axis, eps 1e-6, float32 params."""
    return nnx.LayerNorm(features, epsilon=LN_EPS, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)


def gelu(x: jax.Array) -> jax.Array:
    """The exact (erf) GELU, as PyTorch's nn.GELU()."""
    return jax.nn.gelu(x, approximate=False)


def drop_path_rates(rate: float, depth: int) -> list[float]:
    """Stochastic-depth rates rising linearly from 0 to `rate` over `depth` blocks (timm's rule)."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"drop_path_rate must be in [0, 1), got {rate}")
    return [rate * i / max(depth - 1, 1) for i in range(depth)]


class Mlp(nnx.Module):
    """fc1 (to `hidden` features) - GELU - fc2 (back to `dim`) over the last axis."""

    def __init__(self, dim: int, hidden: int, *, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.fc1 = linear(dim, hidden, dtype=dtype, rngs=rngs)
        self.fc2 = linear(hidden, dim, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(gelu(self.fc1(x)))


class DropPath(nnx.Module):
    """Stochastic depth of a residual branch: in training each sample's branch is dropped with
    probability `rate` and kept ones are scaled by 1 / (1 - rate); identity in eval mode
    (`model.eval()` sets `deterministic`)."""

    def __init__(self, rate: float, *, deterministic: bool = False):
        self.rate = rate
        self.deterministic = deterministic

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """x: [B, ...] -> same shape; randomness from `rngs.dropout()`."""
        if self.rate == 0.0 or self.deterministic:
            return x
        if rngs is None:
            raise ValueError("DropPath in training mode needs `rngs` (a 'dropout' stream)")
        keep = 1.0 - self.rate
        mask = jax.random.bernoulli(rngs.dropout(), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
        return x * (mask.astype(x.dtype) / jnp.asarray(keep, x.dtype))


@jax.tree_util.register_pytree_node_class
class PooledFeatures(list):
    """A backbone's stage maps [B, H_s, W_s, C_s] plus its own pooled vector `pooled` [B, C].

    Backbones whose classifier reads something other than the plain mean of
    the last map (ViT's class token, ConvNeXt's LayerNorm after pooling)
    return this; the Classifier's GAP-FC layer then classifies `pooled`.
    """

    def __init__(self, maps, pooled: jax.Array):
        super().__init__(maps)
        self.pooled = pooled

    def tree_flatten(self):
        return (list(self), self.pooled), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        del aux
        return cls(*children)
