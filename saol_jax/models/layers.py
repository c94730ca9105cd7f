"""Building blocks shared by the backbones and heads: the conv and norm
factories, the loop over stages, parameter-free shortcuts and ShakeDrop.
All tensors are channels-last (NHWC)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx

from saol_jax.models.norm import BatchNorm

ConvFactory = Callable[..., nnx.Conv]
"""`conv(in_channels, out_channels, kernel_size, stride=1)` -> a bias-free conv."""

NormFactory = Callable[..., BatchNorm]
"""`norm(features, *, scale_init=ones)` -> a BatchNorm."""


def he_normal(mode: str = "fan_in") -> nnx.Initializer:
    """He (Kaiming) normal initialiser for HWIO kernels, untruncated like
    PyTorch's `kaiming_normal_`; `mode` is 'fan_in' or 'fan_out'."""
    return nnx.initializers.variance_scaling(2.0, mode, "normal")


def conv(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    *,
    dtype: jnp.dtype,
    rngs: nnx.Rngs,
    init_mode: str = "fan_in",
) -> nnx.Conv:
    """Bias-free square conv with float32 params and `dtype` compute.

    Padding is (k - 1) // 2 before and k // 2 after: symmetric for odd
    kernels (as in PyTorch, so strided convs sample the same positions), and
    'SAME' for any kernel at stride 1.
    """
    pad = ((kernel_size - 1) // 2, kernel_size // 2)
    return nnx.Conv(
        in_channels,
        out_channels,
        (kernel_size, kernel_size),
        strides=(stride, stride),
        padding=(pad, pad),
        use_bias=False,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=he_normal(init_mode),
        rngs=rngs,
    )


def layer_factories(
    *, dtype: jnp.dtype, ghost_size: int, init_mode: str, rngs: nnx.Rngs
) -> tuple[ConvFactory, NormFactory]:
    """The conv and norm factories a model builds once and hands to its blocks.

    Both draw initial values from the same `rngs`, in the order the layers
    are created.
    """
    return (
        partial(conv, dtype=dtype, init_mode=init_mode, rngs=rngs),
        partial(BatchNorm, ghost_size=ghost_size, rngs=rngs),
    )


def branch_layers(
    conv: ConvFactory,
    norm: NormFactory,
    channels: Sequence[int],
    kernels: Sequence[int],
    strides: Sequence[int],
    *,
    pre_norm: bool = False,
    last_norm: dict | None = None,
) -> tuple[tuple[nnx.Conv, ...], tuple[BatchNorm, ...]]:
    """The convs and norms of a residual branch: conv i maps channels[i] to
    channels[i + 1] with kernels[i] and strides[i].

    Post-norm (ResNet): a norm after every conv. Pre-norm (PyramidNet): a
    norm before every conv and one after the last. `last_norm` holds keyword
    arguments of the last norm (e.g. a zero `scale_init`). Layers are created
    in the order the branch applies them, so they draw initial values in that order.
    """
    if not len(channels) - 1 == len(kernels) == len(strides):
        raise ValueError(f"{len(channels)} channel counts need {len(channels) - 1} kernels and strides, "
                         f"got {len(kernels)} and {len(strides)}")
    convs, norms = [], []
    if pre_norm:
        norms.append(norm(channels[0]))
    for i, (c_in, c_out, k, s) in enumerate(zip(channels, channels[1:], kernels, strides)):
        convs.append(conv(c_in, c_out, k, s))
        norms.append(norm(c_out, **(last_norm or {}) if i == len(kernels) - 1 else {}))
    return tuple(convs), tuple(norms)


def stage_features(stages: nnx.List, x: jax.Array, **block_kwargs) -> list[jax.Array]:
    """Runs every block of every stage in turn; returns each stage's output map."""
    features = []
    for stage in stages:
        for block in stage:
            x = block(x, **block_kwargs)
        features.append(x)
    return features


def pad_channels(x: jax.Array, channels: int) -> jax.Array:
    """Appends zero channels: [B, H, W, C] -> [B, H, W, channels]."""
    extra = channels - x.shape[-1]
    if extra == 0:
        return x
    return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, extra)))


def avg_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 average pooling with stride 2: [B, H, W, C] -> [B, ceil(H/2), ceil(W/2), C].

    Odd edges give partial windows averaged over their valid pixels
    (PyTorch's `ceil_mode=True`), so odd sizes such as 7x7 keep every pixel.
    """
    padding = ((0, x.shape[1] % 2), (0, x.shape[2] % 2))
    return nnx.avg_pool(x, (2, 2), strides=(2, 2), padding=padding, count_include_pad=False)


@jax.custom_vjp
def _scale_with_other_grad(x: jax.Array, forward: jax.Array, backward: jax.Array) -> jax.Array:
    """Returns x * forward; the gradient w.r.t. x is cotangent * backward."""
    return x * forward


def _scale_fwd(x, forward, backward):
    return x * forward, (forward, backward)


def _scale_bwd(residuals, cotangent):
    forward, backward = residuals
    return cotangent * backward, jnp.zeros_like(forward), jnp.zeros_like(backward)


_scale_with_other_grad.defvjp(_scale_fwd, _scale_bwd)


class ShakeDrop(nnx.Module):
    """ShakeDrop regularisation of a residual branch (Yamada et al. 2019).

    Training, per sample: b ~ Bernoulli(1 - drop_prob), alpha ~ U[-1, 1],
    beta ~ U[0, 1]; the forward pass multiplies the branch by
    b + alpha - b*alpha and the backward pass by b + beta - b*beta.
    Evaluation multiplies by the expectation 1 - drop_prob.
    """

    def __init__(self, drop_prob: float, *, deterministic: bool = False):
        if not 0.0 <= drop_prob <= 1.0:
            raise ValueError(f"drop_prob must be in [0, 1], got {drop_prob}")
        self.drop_prob = drop_prob
        self.deterministic = deterministic

    def set_view(self, deterministic: bool | None = None) -> None:
        """Lets `nnx.view(model, deterministic=...)` switch the mode."""
        if deterministic is not None:
            self.deterministic = deterministic

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """x: [B, ...] -> same shape and dtype; randomness from `rngs.dropout()`."""
        if self.drop_prob == 0.0:
            return x
        if self.deterministic:
            return x * jnp.asarray(1.0 - self.drop_prob, x.dtype)
        if rngs is None:
            raise ValueError("ShakeDrop in training mode needs `rngs` (a 'dropout' stream)")
        gate_key, alpha_key, beta_key = jax.random.split(rngs.dropout(), 3)
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        gate = jax.random.bernoulli(gate_key, 1.0 - self.drop_prob, shape).astype(jnp.float32)
        alpha = jax.random.uniform(alpha_key, shape, minval=-1.0, maxval=1.0)
        beta = jax.random.uniform(beta_key, shape)
        forward = gate + alpha - gate * alpha
        backward = gate + beta - gate * beta
        return _scale_with_other_grad(x, forward.astype(x.dtype), backward.astype(x.dtype))
