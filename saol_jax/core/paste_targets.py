"""Cheaper targets for SS-2 ``paste`` (docs/method.md §5.2), as pure functions.

``paste`` cuts and pastes the responsibility maps R of the un-mixed images,
which costs a forward pass of the whole un-mixed batch every step. Two
config fields make that pass cheaper (each 1 = the full pass, the default):

- ``loss.paste_clean_fraction`` f: only the first n = round(f · b) examples
  of each device's share of the batch, and their CutMix partners, go through
  the un-mixed pass (2n rows); the other examples take their target from the
  mixed image's own forward (:func:`mixed_target`). f = 0 runs no extra pass.
- ``loss.paste_clean_scale`` s: the un-mixed pass sees the images averaged
  over s × s pixel blocks (1/s² of the pixels); its responsibility maps are
  resized back to the output grid (:func:`upsample_responsibility`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from saol_jax.core.losses import cut_and_paste, responsibility

__all__ = [
    "clean_rows_per_device",
    "mixed_target",
    "first_rows",
    "clean_rows",
    "fraction_target",
    "downsample",
    "upsample_responsibility",
]


def clean_rows_per_device(fraction: float, per_device: int) -> int:
    """n = round(fraction · per_device): the examples per device whose target comes from the un-mixed pass."""
    return int(round(fraction * per_device))


def mixed_target(
    log_attention: jax.Array, log_spatial: jax.Array, labels_a: jax.Array, labels_b: jax.Array, coverage: jax.Array
) -> jax.Array:
    """The ``paste`` target built from the mixed image's own maps, no extra forward pass.

    T ∝ (1 - m) R_a + m R_b with R_a, R_b the mixed image's responsibilities
    for its own and its partner's label. On an un-mixed example it is
    ``paste``'s target of the same maps; on a mixed one the split of mass
    between the regions comes from the mixed image, not from how much of
    each un-mixed image's responsibility the box keeps.

    Args:
      log_attention: [B, Ho, Wo]; log_spatial: [B, Ho, Wo, K]: the model on the mixed batch.
      labels_a, labels_b: [B] int; coverage: [B, Ho, Wo] m_ij.
    Returns:
      [B, Ho, Wo] float32 log T (no gradient).
    """
    return cut_and_paste(
        responsibility(log_attention, log_spatial, labels_a),
        responsibility(log_attention, log_spatial, labels_b),
        coverage,
    )


def first_rows(x: jax.Array, rows: int, devices: int) -> jax.Array:
    """[B, ...] -> [devices · rows, ...]: the first `rows` examples of each device's share."""
    share = x.reshape(devices, x.shape[0] // devices, *x.shape[1:])
    return share[:, :rows].reshape(devices * rows, *x.shape[1:])


def clean_rows(x: jax.Array, partner: jax.Array, rows: int, devices: int) -> jax.Array:
    """[B, ...] -> [devices · 2 rows, ...]: per device, its first `rows` examples, then their partners.

    `partner` [B] int holds batch indices within the same device's share (CutMix groups never span
    devices), so the gather stays on each device.
    """
    per_device = x.shape[0] // devices
    share = x.reshape(devices, per_device, *x.shape[1:])
    local = (partner % per_device).reshape(devices, per_device)[:, :rows]
    partners = jax.vmap(lambda rows_of_device, index: rows_of_device[index])(share, local)
    return jnp.concatenate([share[:, :rows], partners], axis=1).reshape(devices * 2 * rows, *x.shape[1:])


def fraction_target(
    clean_log_resp: jax.Array, coverage: jax.Array, mixed_log_target: jax.Array, rows: int, devices: int
) -> jax.Array:
    """``paste``'s target on the first `rows` examples of each device, the mixed-image target elsewhere.

    Args:
      clean_log_resp: [devices · 2 rows, Ho, Wo] log R of the un-mixed pass on :func:`clean_rows`
        (own examples then partners, per device; each with its own label).
      coverage: [B, Ho, Wo] m_ij of the mixed batch.
      mixed_log_target: [B, Ho, Wo] :func:`mixed_target` of the mixed batch.
    Returns:
      [B, Ho, Wo] float32 log T.
    """
    grid = clean_log_resp.shape[1:]
    pair = clean_log_resp.reshape(devices, 2, rows, *grid)
    own, pasted = (pair[:, i].reshape(devices * rows, *grid) for i in (0, 1))
    pasted_target = cut_and_paste(own, pasted, first_rows(coverage, rows, devices))
    share = mixed_log_target.reshape(devices, -1, *grid).astype(jnp.float32)
    share = share.at[:, :rows].set(pasted_target.reshape(devices, rows, *grid))
    return share.reshape(mixed_log_target.shape)


def downsample(images: jax.Array, scale: int) -> jax.Array:
    """[B, H, W, C] -> [B, H / scale, W / scale, C], the mean of each scale × scale block (scale 1: unchanged)."""
    if scale == 1:
        return images
    b, h, w, c = images.shape
    blocks = images.reshape(b, h // scale, scale, w // scale, scale, c)
    return jnp.mean(blocks.astype(jnp.float32), axis=(2, 4)).astype(images.dtype)


def upsample_responsibility(log_resp: jax.Array, grid_hw: tuple[int, int]) -> jax.Array:
    """[B, h, w] log R -> [B, Ho, Wo] log R: R resized bilinearly to the output grid and renormalised.

    Unchanged when the grid already matches.
    """
    if tuple(log_resp.shape[1:]) == tuple(grid_hw):
        return log_resp
    resp = jax.image.resize(jnp.exp(log_resp), (log_resp.shape[0], *grid_hw), "linear")
    log_up = jnp.log(jnp.maximum(resp, 0.0))
    return log_up - jax.nn.logsumexp(log_up, axis=(1, 2), keepdims=True)
