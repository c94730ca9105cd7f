"""CutMix on device: per-sample boxes, in-group partners, pasting and per-cell box coverage.

Every function of this module is a pure, jit-able jax function. Random draws depend only on
(key, batch size, group size), never on how the batch is sharded, so a run on
many devices and one on a single device with the same ``group_size`` give the
same boxes, partners and mixed images.

Box convention: ``boxes[b] = (y0, x0, y1, x1)``, int32, the half-open pixel box
``[y0, y1) x [x0, x1)`` pasted from the partner into sample ``b``; an empty box
has ``y0 == y1 == x0 == x1 == 0``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

__all__ = [
    "CutMixBatch",
    "sample_boxes",
    "cell_coverage",
    "group_permutation",
    "cutmix",
]


class CutMixBatch(NamedTuple):
    """Result of :func:`cutmix`.

    Attributes:
      images: [B, H, W, C] mixed images, same dtype as the input.
      partner: [B] int32, batch index of the sample whose pixels were pasted.
      lam: [B] float32, fraction of the image that is still the sample's own
        (from the clipped box; 1 where CutMix was not applied).
      boxes: [B, 4] int32 (y0, x0, y1, x1), half-open; all zeros where not applied.
      coverage: [B, Ho, Wo] float32, exact fraction of each output cell covered
        by the box (the per-location weight of the partner's label).
    """

    images: jax.Array
    partner: jax.Array
    lam: jax.Array
    boxes: jax.Array
    coverage: jax.Array


def sample_boxes(
    key: jax.Array,
    batch_size: int,
    image_hw: tuple[int, int],
    *,
    beta: float,
    prob: float,
) -> tuple[jax.Array, jax.Array]:
    """Draws one CutMix box per sample.

    Per sample: lam0 ~ Beta(beta, beta) (drawn as Uniform(0, 1) when beta == 1);
    box height h = int(H * sqrt(1 - lam0)) and width w = int(W * sqrt(1 - lam0));
    centre (cy, cx) uniform over pixel positions; the box
    ``[cy - h // 2, cy - h // 2 + h)`` (likewise in x) is clipped to the image.
    With probability ``1 - prob`` the box is empty.

    Returns:
      boxes: [B, 4] int32 (y0, x0, y1, x1).
      lam: [B] float32, 1 - clipped box area / (H * W).
    """
    if beta <= 0:
        raise ValueError(f"CutMix beta must be > 0, got {beta}")
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"CutMix prob must be in [0, 1], got {prob}")
    height, width = int(image_hw[0]), int(image_hw[1])
    k_lam, k_cy, k_cx, k_apply = jax.random.split(key, 4)
    if beta == 1.0:
        # Beta(1, 1) is Uniform(0, 1); sampling it directly skips the Gamma
        # rejection loop (faster to compile and run, nothing to sync when sharded).
        lam0 = jax.random.uniform(k_lam, (batch_size,), dtype=jnp.float32)
    else:
        lam0 = jax.random.beta(k_lam, beta, beta, (batch_size,), dtype=jnp.float32)
    ratio = jnp.sqrt(jnp.clip(1.0 - lam0, 0.0, 1.0))
    cut_h = jnp.floor(height * ratio).astype(jnp.int32)
    cut_w = jnp.floor(width * ratio).astype(jnp.int32)
    cy = jax.random.randint(k_cy, (batch_size,), 0, height, dtype=jnp.int32)
    cx = jax.random.randint(k_cx, (batch_size,), 0, width, dtype=jnp.int32)
    y0 = cy - cut_h // 2
    x0 = cx - cut_w // 2
    y1 = jnp.clip(y0 + cut_h, 0, height)
    x1 = jnp.clip(x0 + cut_w, 0, width)
    y0 = jnp.clip(y0, 0, height)
    x0 = jnp.clip(x0, 0, width)
    applied = jax.random.uniform(k_apply, (batch_size,)) < prob
    # lam == 1 where not applied, or where the drawn box is empty (side 0).
    boxes = jnp.where(applied[:, None], jnp.stack([y0, x0, y1, x1], axis=-1), 0)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    # Integer numerator: the float result is then the same eagerly and under jit.
    lam = (height * width - area).astype(jnp.float32) / float(height * width)
    return boxes.astype(jnp.int32), lam


def _overlap_1d(lo: jax.Array, hi: jax.Array, size: int, cells: int) -> jax.Array:
    """[B] pixel intervals [lo, hi) -> [B, cells] fraction of each of `cells` equal cells covered.

    Cell i spans [i * size / cells, (i + 1) * size / cells). Computed in units of
    1 / cells pixel, where every edge is an integer, so the result is exact up
    to the final division.
    """
    edges = jnp.arange(cells + 1, dtype=jnp.int32) * size  # scaled cell edges
    lo_s = lo[:, None] * cells
    hi_s = hi[:, None] * cells
    inter = jnp.minimum(hi_s, edges[None, 1:]) - jnp.maximum(lo_s, edges[None, :-1])
    return jnp.maximum(inter, 0).astype(jnp.float32) / float(size)


def cell_coverage(
    boxes: jax.Array, image_hw: tuple[int, int], grid_hw: tuple[int, int]
) -> jax.Array:
    """Exact fraction of each output cell covered by each box.

    Cell (i, j) of the Ho x Wo grid spans the continuous pixel rectangle
    [i H/Ho, (i+1) H/Ho) x [j W/Wo, (j+1) W/Wo); the grid need not divide the
    image. Computed as the product of 1-D overlaps, no full-resolution mask.

    Args:
      boxes: [B, 4] int (y0, x0, y1, x1), half-open pixel boxes.
    Returns:
      [B, Ho, Wo] float32 in [0, 1].
    """
    height, width = int(image_hw[0]), int(image_hw[1])
    grid_h, grid_w = int(grid_hw[0]), int(grid_hw[1])
    if grid_h <= 0 or grid_w <= 0:
        raise ValueError(f"grid_hw must be positive, got {grid_hw}")
    boxes = boxes.astype(jnp.int32)
    cov_y = _overlap_1d(boxes[:, 0], boxes[:, 2], height, grid_h)  # [B, Ho]
    cov_x = _overlap_1d(boxes[:, 1], boxes[:, 3], width, grid_w)  # [B, Wo]
    return cov_y[:, :, None] * cov_x[:, None, :]


def _check_group(batch_size: int, group_size: int | None) -> int:
    group = batch_size if group_size is None else int(group_size)
    if group <= 0 or batch_size % group != 0:
        raise ValueError(
            f"CutMix group_size {group_size} must be positive and divide the batch size {batch_size}"
        )
    return group


def _local_permutation(key: jax.Array, batch_size: int, group: int) -> jax.Array:
    """[B/g, g] int32: a random permutation of range(g) in each row."""
    scores = jax.random.uniform(key, (batch_size // group, group))
    return jnp.argsort(scores, axis=1).astype(jnp.int32)


def group_permutation(key: jax.Array, batch_size: int, group_size: int | None) -> jax.Array:
    """A random permutation inside each contiguous group of ``group_size`` samples.

    Returns:
      [B] int32 batch indices; entry b lies in the same group as b.
    """
    group = _check_group(batch_size, group_size)
    local = _local_permutation(key, batch_size, group)
    offsets = jnp.arange(batch_size // group, dtype=jnp.int32)[:, None] * group
    return (local + offsets).reshape(batch_size)


def _group_view(images: jax.Array, group: int) -> jax.Array:
    """[B, ...] -> [B/g, g, ...], keeping an explicit batch sharding on the new axis 0.

    If groups span shards of an explicitly sharded batch (B/g not a multiple of
    the shard count), the batch is gathered first: the cross-device traffic
    that a per-device ``group_size`` avoids. Auto-sharded arrays are left to XLA.
    """
    batch = images.shape[0]
    spec = tuple(jax.typeof(images).sharding.spec)
    axis0 = spec[0] if spec else None
    if axis0 is not None:
        names = axis0 if isinstance(axis0, tuple) else (axis0,)
        mesh_shape = jax.typeof(images).sharding.mesh.shape
        shards = math.prod(mesh_shape[name] for name in names)
        if (batch // group) % shards != 0:
            replicated = jax.sharding.NamedSharding(
                jax.typeof(images).sharding.mesh, P(*([None] * images.ndim))
            )
            images = jax.sharding.reshard(images, replicated)
    return images.reshape(batch // group, group, *images.shape[1:])


def cutmix(
    key: jax.Array,
    images: jax.Array,
    *,
    grid_hw: tuple[int, int],
    beta: float = 1.0,
    prob: float = 1.0,
    group_size: int | None = None,
) -> CutMixBatch:
    """Applies CutMix to a batch, pairing samples within groups of ``group_size``.

    Pass the per-device batch size as ``group_size`` so that the partner gather
    stays on each device when the batch is sharded on axis 0 (None pairs across
    the whole batch).

    Args:
      key: PRNG key.
      images: [B, H, W, C].
      grid_hw: (Ho, Wo), the output grid of the SAOL head.
    Returns:
      CutMixBatch; the image-level target is lam * y + (1 - lam) * y[partner],
      the per-cell one (1 - coverage) * y + coverage * y[partner].
    """
    if images.ndim != 4:
        raise ValueError(f"images must be [B, H, W, C], got shape {images.shape}")
    batch, height, width, channels = images.shape
    group = _check_group(batch, group_size)
    k_box, k_perm = jax.random.split(key)
    boxes, lam = sample_boxes(k_box, batch, (height, width), beta=beta, prob=prob)
    local = _local_permutation(k_perm, batch, group)  # [B/g, g]
    offsets = jnp.arange(batch // group, dtype=jnp.int32)[:, None] * group
    partner = (local + offsets).reshape(batch)

    # Batched gather inside each group: with the batch sharded on axis 0 (and
    # groups no larger than a shard), axis 0 of the grouped view stays sharded
    # and the gather along axis 1 needs no cross-device traffic.
    grouped = _group_view(images, group)
    pasted = jnp.take_along_axis(grouped, local[:, :, None, None, None], axis=1)
    pasted = pasted.reshape(images.shape)

    rows = jnp.arange(height, dtype=jnp.int32)
    cols = jnp.arange(width, dtype=jnp.int32)
    in_y = (rows[None, :] >= boxes[:, 0:1]) & (rows[None, :] < boxes[:, 2:3])  # [B, H]
    in_x = (cols[None, :] >= boxes[:, 1:2]) & (cols[None, :] < boxes[:, 3:4])  # [B, W]
    mask = in_y[:, :, None, None] & in_x[:, None, :, None]  # [B, H, W, 1]
    mixed = jnp.where(mask, pasted, images)

    coverage = cell_coverage(boxes, (height, width), grid_hw)
    return CutMixBatch(images=mixed, partner=partner, lam=lam, boxes=boxes, coverage=coverage)
