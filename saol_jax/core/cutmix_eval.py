"""How SAOL's maps follow a CutMix-pasted box (pure jax, jit-able): a check of label mixing.

This is not object localisation: the box is the pasted patch, not an
object, and with area-mixed CutMix targets the classification loss is
optimal exactly when the attention mass in the box equals the box's area
share, so these figures measure how the model splits the mixed label.
Localisation against true object boxes is `saol_jax.core.localisation`.

On an image whose box region came from a partner image (see
`saol_jax.core.cutmix`), the box cells are those at least half covered by it
(coverage m >= 0.5). Two measures:

- partner IoU: IoU between the cells where the partner class's spatial
  probability beats the own class's and the box cells;
- attention in box: the attention mass inside the box, sum_ij A_ij m_ij,
  next to the box's area share, mean_ij m_ij (what uniform attention gets).

`cutmix_sums` returns masked sums over a batch for an eval loop to
accumulate; `cutmix_metrics` turns the accumulated sums into means.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

BOX_THRESHOLD = 0.5

SUM_KEYS = (
    "cutmix_iou_sum", "cutmix_iou_count", "cutmix_att_mass_sum", "cutmix_box_area_sum", "cutmix_box_count"
)


def box_cells(coverage: jax.Array) -> jax.Array:
    """coverage m [B, Ho, Wo] -> bool [B, Ho, Wo], cells at least half covered by the box."""
    return coverage >= BOX_THRESHOLD


def partner_cells(log_spatial: jax.Array, labels_a: jax.Array, labels_b: jax.Array) -> jax.Array:
    """bool [B, Ho, Wo]: cells where p(label_b) > p(label_a) in log_spatial [B, Ho, Wo, K]."""
    own = jnp.take_along_axis(log_spatial, labels_a[:, None, None, None], axis=-1)[..., 0]
    partner = jnp.take_along_axis(log_spatial, labels_b[:, None, None, None], axis=-1)[..., 0]
    return partner > own


def cell_iou(pred: jax.Array, target: jax.Array) -> jax.Array:
    """IoU of two bool cell sets [B, Ho, Wo] -> [B] float32 (0 where both are empty)."""
    inter = jnp.sum(pred & target, axis=(1, 2)).astype(jnp.float32)
    union = jnp.sum(pred | target, axis=(1, 2)).astype(jnp.float32)
    return jnp.where(union > 0, inter / jnp.maximum(union, 1.0), 0.0)


def partner_iou(
    log_spatial: jax.Array, labels_a: jax.Array, labels_b: jax.Array, coverage: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """IoU between the partner-class cells and the box cells.

    Args:
      log_spatial: [B, Ho, Wo, K] log class probabilities per cell.
      labels_a, labels_b: [B] int, own and partner labels.
      coverage: [B, Ho, Wo] box coverage per cell.
    Returns:
      iou [B] float32 and valid [B] bool: the box covers a cell at least half
      and the two labels differ (otherwise the partner region is undefined).
    """
    target = box_cells(coverage)
    iou = cell_iou(partner_cells(log_spatial, labels_a, labels_b), target)
    valid = jnp.any(target, axis=(1, 2)) & (labels_a != labels_b)
    return iou, valid


def attention_in_box(log_attention: jax.Array, coverage: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Attention mass inside the box and the box's area share.

    Args:
      log_attention: [B, Ho, Wo] log attention (sums to 1 over cells after exp).
      coverage: [B, Ho, Wo] box coverage m per cell.
    Returns:
      mass [B] = sum_ij A_ij m_ij and area [B] = mean_ij m_ij, both float32.
    """
    coverage = coverage.astype(jnp.float32)
    mass = jnp.sum(jnp.exp(log_attention.astype(jnp.float32)) * coverage, axis=(1, 2))
    return mass, jnp.mean(coverage, axis=(1, 2))


def cutmix_sums(
    log_attention: jax.Array,
    log_spatial: jax.Array,
    labels_a: jax.Array,
    labels_b: jax.Array,
    coverage: jax.Array,
    mask: jax.Array,
) -> dict[str, jax.Array]:
    """Masked sums over a batch, to accumulate over an eval split.

    Args:
      log_attention: [B, Ho, Wo]; log_spatial: [B, Ho, Wo, K] (SAOL outputs
        on the CutMix'ed images).
      labels_a, labels_b: [B] int, own and partner labels.
      coverage: [B, Ho, Wo] box coverage from `cutmix`.
      mask: [B] bool or 0/1, examples to count (for padded eval batches pass
        `mask & mask[partner]`, so that no padding slot is a partner either).
    Returns:
      float32 scalars `cutmix_iou_sum`, `cutmix_iou_count` (examples with a valid
      partner IoU), `cutmix_att_mass_sum`, `cutmix_box_area_sum`, `cutmix_box_count`
      (examples with a non-empty box).
    """
    weight = mask.astype(jnp.float32)
    iou, valid = partner_iou(log_spatial, labels_a, labels_b, coverage)
    mass, area = attention_in_box(log_attention, coverage)
    iou_weight = weight * valid.astype(jnp.float32)
    box_weight = weight * (area > 0).astype(jnp.float32)
    return {
        "cutmix_iou_sum": jnp.sum(iou * iou_weight),
        "cutmix_iou_count": jnp.sum(iou_weight),
        "cutmix_att_mass_sum": jnp.sum(mass * box_weight),
        "cutmix_box_area_sum": jnp.sum(area * box_weight),
        "cutmix_box_count": jnp.sum(box_weight),
    }


def cutmix_metrics(totals: Mapping[str, float]) -> dict[str, float]:
    """Accumulated `cutmix_sums` -> means.

    Returns `partner_iou` (mean over valid examples), `att_mass_in_box` and
    `box_area_share` (means over examples with a box) and their ratio
    `att_box_concentration` (1 = the attention of a uniform map; NaN when no
    example counted).
    """
    def ratio(num: float, den: float) -> float:
        return float(num) / float(den) if den > 0 else float("nan")

    mass = ratio(totals["cutmix_att_mass_sum"], totals["cutmix_box_count"])
    area = ratio(totals["cutmix_box_area_sum"], totals["cutmix_box_count"])
    return {
        "partner_iou": ratio(totals["cutmix_iou_sum"], totals["cutmix_iou_count"]),
        "att_mass_in_box": mass,
        "box_area_share": area,
        "att_box_concentration": ratio(totals["cutmix_att_mass_sum"], totals["cutmix_box_area_sum"]),
    }
