"""CutMix-box measures on hand-made 2x2 maps whose answers are worked out by hand."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from saol_jax.core import cutmix, cutmix_eval


def log_spatial_from_winners(winners: np.ndarray, num_classes: int = 3) -> jax.Array:
    """[B, Ho, Wo] winning class per cell -> log probabilities: 0.8 on the winner, 0.1 elsewhere."""
    probs = np.full((*winners.shape, num_classes), 0.2 / (num_classes - 1), np.float32)
    np.put_along_axis(probs, winners[..., None], 0.8, axis=-1)
    return jnp.log(jnp.asarray(probs))


# Example 0: own class 0, partner 1, box = top row; class 1 wins the top row and cell (1, 1).
# Example 1: own 2, partner 0, box = cell (0, 0) only (coverage 0.5), class 0 wins nowhere.
# Example 2: own == partner: the partner region is undefined.
WINNERS = np.array([[[1, 1], [0, 1]], [[2, 2], [2, 2]], [[1, 1], [1, 1]]])
LABELS_A = jnp.array([0, 2, 1])
LABELS_B = jnp.array([1, 0, 1])
COVERAGE = jnp.array([[[1.0, 1.0], [0.0, 0.0]], [[0.5, 0.25], [0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]])
ATTENTION = jnp.array([[[0.4, 0.3], [0.2, 0.1]], [[0.25, 0.25], [0.25, 0.25]], [[0.1, 0.2], [0.3, 0.4]]])


def test_box_and_partner_cells():
    np.testing.assert_array_equal(
        cutmix_eval.box_cells(COVERAGE)[:2],
        [[[True, True], [False, False]], [[True, False], [False, False]]],
    )
    partner = cutmix_eval.partner_cells(log_spatial_from_winners(WINNERS), LABELS_A, LABELS_B)
    np.testing.assert_array_equal(partner[:2], [[[True, True], [False, True]], [[False, False], [False, False]]])


def test_partner_iou_by_hand():
    iou, valid = cutmix_eval.partner_iou(log_spatial_from_winners(WINNERS), LABELS_A, LABELS_B, COVERAGE)
    np.testing.assert_allclose(iou[:2], [2 / 3, 0.0], rtol=1e-6)
    np.testing.assert_array_equal(valid, [True, True, False])


def test_iou_of_empty_sets_is_zero_and_perfect_match_is_one():
    empty = jnp.zeros((1, 2, 2), bool)
    full = jnp.ones((1, 2, 2), bool)
    assert float(cutmix_eval.cell_iou(empty, empty)[0]) == 0.0
    assert float(cutmix_eval.cell_iou(full, full)[0]) == 1.0


def test_attention_in_box_by_hand():
    mass, area = cutmix_eval.attention_in_box(jnp.log(ATTENTION), COVERAGE)
    np.testing.assert_allclose(mass, [0.7, 0.25 * 0.75, 1.0], rtol=1e-6)
    np.testing.assert_allclose(area, [0.5, 0.75 / 4, 1.0], rtol=1e-6)


def test_sums_respect_the_mask_and_give_means():
    sums = jax.jit(cutmix_eval.cutmix_sums)(
        jnp.log(ATTENTION), log_spatial_from_winners(WINNERS), LABELS_A, LABELS_B, COVERAGE,
        jnp.array([True, True, False]),
    )
    got = {k: float(v) for k, v in sums.items()}
    assert set(got) == set(cutmix_eval.SUM_KEYS)
    np.testing.assert_allclose(
        [got[k] for k in cutmix_eval.SUM_KEYS], [2 / 3, 2.0, 0.7 + 0.1875, 0.5 + 0.1875, 2.0], rtol=1e-6
    )
    metrics = cutmix_eval.cutmix_metrics(got)
    assert metrics["partner_iou"] == pytest.approx(1 / 3)
    assert metrics["att_mass_in_box"] == pytest.approx(0.44375)
    assert metrics["box_area_share"] == pytest.approx(0.34375)
    assert metrics["att_box_concentration"] == pytest.approx(0.8875 / 0.6875)


def test_metrics_of_nothing_counted_are_nan():
    metrics = cutmix_eval.cutmix_metrics(dict.fromkeys(cutmix_eval.SUM_KEYS, 0.0))
    assert all(np.isnan(v) for v in metrics.values())


def test_with_coverage_from_cutmix_boxes():
    # An 8x8 image on a 2x2 grid: the box [0, 4) x [0, 8) covers the top row exactly,
    # the box [0, 2) x [0, 2) a quarter of cell (0, 0), so no cell counts as box.
    coverage = cutmix.cell_coverage(jnp.array([[0, 0, 4, 8], [0, 0, 2, 2]]), (8, 8), (2, 2))
    log_spatial = log_spatial_from_winners(np.array([[[1, 1], [0, 0]], [[1, 0], [0, 0]]]))
    labels_a, labels_b = jnp.array([0, 0]), jnp.array([1, 1])
    iou, valid = cutmix_eval.partner_iou(log_spatial, labels_a, labels_b, coverage)
    np.testing.assert_allclose(iou, [1.0, 0.0])
    np.testing.assert_array_equal(valid, [True, False])
    uniform = jnp.full((2, 2, 2), jnp.log(0.25))
    mass, area = cutmix_eval.attention_in_box(uniform, coverage)
    np.testing.assert_allclose(mass, area, rtol=1e-6)
    np.testing.assert_allclose(area, [0.5, 1 / 16], rtol=1e-6)
