"""Batch normalisation with optional ghost (per-group) statistics.

Under `jax.jit` on a batch sharded over devices, plain batch statistics are
global, as with synchronised BN. Setting `ghost_size` to the per-device batch
computes statistics over contiguous groups of that many samples instead, which
reproduces the per-replica statistics of PyTorch `DataParallel` references.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class BatchNorm(nnx.Module):
    """BatchNorm over every axis but the last (channels, NHWC).

    Flax convention: `momentum` is the decay of the running averages
    (this module's 0.9 equals PyTorch's momentum 0.1). Statistics are computed in
    float32 whatever the activation dtype; the output keeps the input dtype.
    """

    def __init__(
        self,
        num_features: int,
        *,
        momentum: float = 0.9,
        epsilon: float = 1e-5,
        ghost_size: int = 0,
        scale_init: nnx.Initializer = nnx.initializers.ones,
        rngs: nnx.Rngs,
    ):
        self.num_features = num_features
        self.momentum = momentum
        self.epsilon = epsilon
        self.ghost_size = ghost_size
        self.use_running_average = False
        self.scale = nnx.Param(scale_init(rngs.params(), (num_features,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((num_features,), jnp.float32))
        self.mean = nnx.BatchStat(jnp.zeros((num_features,), jnp.float32))
        self.var = nnx.BatchStat(jnp.ones((num_features,), jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        """x: [B, ..., C] -> same shape and dtype."""
        if self.use_running_average:
            return self._normalise(x, self.mean[...], self.var[...])
        x32 = x.astype(jnp.float32)
        batch = x.shape[0]
        if self.ghost_size and self.ghost_size < batch:
            if batch % self.ghost_size:
                raise ValueError(
                    f"ghost_size {self.ghost_size} must divide the batch {batch}"
                )
            groups = x32.reshape((batch // self.ghost_size, self.ghost_size) + x.shape[1:])
            axes = tuple(range(1, groups.ndim - 1))
            mean = groups.mean(axes, keepdims=True)
            var = jnp.square(groups - mean).mean(axes, keepdims=True)
            y = (groups - mean) * jax.lax.rsqrt(var + self.epsilon)
            y = (y * self.scale[...] + self.bias[...]).reshape(x.shape)
            batch_mean = mean.reshape(-1, self.num_features).mean(0)
            batch_var = var.reshape(-1, self.num_features).mean(0)
        else:
            axes = tuple(range(x.ndim - 1))
            batch_mean = x32.mean(axes)
            batch_var = jnp.square(x32 - batch_mean).mean(axes)
            y = self._normalise(x32, batch_mean, batch_var)
        decay = self.momentum
        self.mean[...] = decay * self.mean[...] + (1 - decay) * batch_mean
        self.var[...] = decay * self.var[...] + (1 - decay) * batch_var
        return y.astype(x.dtype)

    def _normalise(self, x: jax.Array, mean: jax.Array, var: jax.Array) -> jax.Array:
        inv = jax.lax.rsqrt(var + self.epsilon) * self.scale[...]
        y = (x.astype(jnp.float32) - mean) * inv + self.bias[...]
        return y.astype(x.dtype)
