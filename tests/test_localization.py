"""True-box localisation scores on hand-made maps whose answers are worked out by hand."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from saol_jax import localization as loc

# A 4x4 grid on a 16x16 image (4 pixels a cell). The box covers the top-left 2x2 cells.
BOX = jnp.array([[0.0, 0.0, 0.5, 0.5]])


def one_hot_cell(i: int, j: int, value: float = 1.0) -> jax.Array:
    return jnp.zeros((1, 4, 4)).at[0, i, j].set(value)


def test_pointing_checks_the_peak_cell_centre():
    assert bool(loc.pointing(one_hot_cell(1, 1), BOX)[0])
    assert not bool(loc.pointing(one_hot_cell(2, 1), BOX)[0])
    # Cell (1, 1) spans [0.25, 0.5): its centre 0.375 is inside a box ending at 0.4, not at 0.3.
    assert bool(loc.pointing(one_hot_cell(1, 1), jnp.array([[0.0, 0.0, 0.4, 0.4]]))[0])
    assert not bool(loc.pointing(one_hot_cell(1, 1), jnp.array([[0.0, 0.0, 0.3, 0.3]]))[0])


def test_mass_ratio_by_hand():
    uniform = jnp.full((1, 4, 4), 1 / 16)
    np.testing.assert_allclose(loc.mass_ratio(uniform, BOX, (16, 16)), [1.0], rtol=1e-6)
    # All mass in one box cell: mass 1 over an area share of 1/4.
    np.testing.assert_allclose(loc.mass_ratio(one_hot_cell(0, 1), BOX, (16, 16)), [4.0], rtol=1e-6)
    np.testing.assert_allclose(loc.mass_ratio(one_hot_cell(3, 3), BOX, (16, 16)), [0.0], atol=1e-7)
    # Half the mass in the box, half outside: ratio 2.
    split = one_hot_cell(0, 0, 0.5) + one_hot_cell(3, 3, 0.5)
    np.testing.assert_allclose(loc.mass_ratio(split, BOX, (16, 16)), [2.0], rtol=1e-6)
    # A box edge inside a cell: rows [0, 6) of 16 cover cell row 1 by half; area share 6/16 * 1/2.
    half = jnp.array([[0.0, 0.0, 6 / 16, 0.5]])
    np.testing.assert_allclose(loc.mass_ratio(one_hot_cell(1, 0), half, (16, 16)), [0.5 / (6 / 32)], rtol=1e-6)


def test_mass_ratio_ignores_a_shift_and_a_scale_of_the_map():
    # A signed CAM with a bias reads like the same map without it.
    cam = jnp.arange(16, dtype=jnp.float32).reshape(1, 4, 4)
    base = loc.mass_ratio(cam, BOX, (16, 16))
    np.testing.assert_allclose(loc.mass_ratio(3.0 * cam - 7.0, BOX, (16, 16)), base, rtol=1e-5)
    # cam - min = arange(16): in the box cells 0, 1, 4, 5 (sum 10 of 120), area share 1/4.
    np.testing.assert_allclose(base, [10 / 120 / 0.25], rtol=1e-6)
    constant = jnp.full((1, 4, 4), -2.0)
    np.testing.assert_allclose(loc.mass_ratio(constant, BOX, (16, 16)), [1.0], rtol=1e-6)


def test_cell_maps_pick_the_predicted_class():
    attention = jnp.array([[[0.1, 0.2], [0.3, 0.4]]] * 2)
    spatial = jnp.stack([jnp.full((2, 2, 2), 0.1), jnp.full((2, 2, 2), 0.9)], -1)
    outputs = {
        "log_attention": jnp.log(attention),
        "log_spatial": jnp.log(spatial),
        "cam": jnp.arange(2 * 2 * 2 * 2, dtype=jnp.float32).reshape(2, 2, 2, 2),
    }
    classes = jnp.array([0, 1])
    np.testing.assert_allclose(loc.cell_maps(outputs, "attention", classes), attention, rtol=1e-6)
    np.testing.assert_allclose(loc.cell_maps(outputs, "spatial", classes)[0], 0.1, rtol=1e-6)
    np.testing.assert_allclose(loc.cell_maps(outputs, "spatial", classes)[1], 0.9, rtol=1e-6)
    np.testing.assert_allclose(loc.cell_maps(outputs, "product", classes)[1], 0.9 * attention[1], rtol=1e-6)
    np.testing.assert_array_equal(loc.cell_maps(outputs, "cam", classes)[1], [[9, 11], [13, 15]])
    with pytest.raises(ValueError, match="map must be one of"):
        loc.cell_maps(outputs, "saliency", classes)


# ----------------------------------------------------------------- boxes from maps (host)


def test_box_iou_by_hand():
    assert loc.box_iou(np.array([0, 0, 0.5, 0.5]), np.array([0, 0, 1, 1])) == pytest.approx(0.25)
    assert loc.box_iou(np.array([0, 0, 0.5, 0.5]), np.array([0.5, 0.5, 1, 1])) == 0.0
    assert loc.box_iou(np.array([0, 0, 0.5, 1]), np.array([0, 0.5, 0.5, 1])) == pytest.approx(0.5)
    # Several ground-truth boxes: the best one counts.
    gt = np.array([[0.5, 0.5, 1, 1], [0, 0, 0.5, 0.5]])
    assert loc.box_iou(np.array([0, 0, 0.5, 0.5]), gt) == pytest.approx(1.0)


def test_threshold_box_keeps_the_largest_component_or_all():
    heat = np.zeros((8, 8))
    heat[1:4, 1:3] = 1.0  # 6 pixels: rows 1-3, columns 1-2
    heat[6, 5:7] = 0.5  # 2 pixels
    np.testing.assert_allclose(loc.threshold_box(heat, 0.4, "largest"), [1 / 8, 1 / 8, 4 / 8, 3 / 8])
    np.testing.assert_allclose(loc.threshold_box(heat, 0.4, "all"), [1 / 8, 1 / 8, 7 / 8, 7 / 8])
    # Above the threshold only the brighter blob remains.
    np.testing.assert_allclose(loc.threshold_box(heat, 0.6, "all"), [1 / 8, 1 / 8, 4 / 8, 3 / 8])


def test_largest_component_is_four_connected():
    heat = np.zeros((4, 4))
    heat[0, 0] = heat[1, 1] = heat[2, 2] = 1.0  # diagonal: three components of one pixel
    box = loc.threshold_box(heat, 0.5, "largest")
    assert (box[2] - box[0]) * (box[3] - box[1]) == pytest.approx(1 / 16)


def test_one_hot_cell_upsamples_to_its_own_pixels():
    # A 4x4 grid on an 8x8 image: bilinear upsampling gives the cell's own 2x2 pixels
    # 0.75^2 = 0.5625 of the peak and every other pixel at most 0.75 * 0.25.
    cells = jnp.zeros((1, 4, 4)).at[0, 2, 1].set(1.0)
    heat = np.asarray(loc.upsample_normalised(cells, (8, 8)))[0]
    assert heat.max() == pytest.approx(1.0) and heat.min() == pytest.approx(0.0)
    np.testing.assert_allclose(loc.threshold_box(heat, 0.5), [4 / 8, 2 / 8, 6 / 8, 4 / 8])


def test_constant_map_gives_the_whole_image():
    heat = np.asarray(loc.upsample_normalised(jnp.full((1, 3, 3), 1 / 9), (6, 6)))[0]
    np.testing.assert_array_equal(heat, 1.0)
    np.testing.assert_allclose(loc.threshold_box(heat, 0.2), [0, 0, 1, 1])


# ----------------------------------------------------------------- an eval batch


def test_box_scores_and_iou_sums_on_a_hand_made_batch():
    # Two 8x8 images on a 2x2 grid, 2 classes. Example 0: box = top-left cell; the attention
    # and the CAM peak there. Example 1: box = bottom row; the attention peaks at the top
    # right, the CAM is flat. Example 2 is padding (mask False) and must not count.
    boxes = jnp.array([[0.0, 0.0, 0.5, 0.5], [0.5, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    attention = jnp.array([[[0.7, 0.1], [0.1, 0.1]], [[0.1, 0.7], [0.1, 0.1]], [[0.25] * 2] * 2])
    spatial_c0 = jnp.full((3, 2, 2), 0.8)
    cam = jnp.stack([jnp.array([[[5.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]], [[0.0] * 2] * 2]),
                     jnp.zeros((3, 2, 2))], -1)
    log_attention = jnp.log(attention)
    log_spatial = jnp.log(jnp.stack([spatial_c0, 1.0 - spatial_c0], -1))
    outputs = {
        "log_attention": log_attention,
        "log_spatial": log_spatial,
        "log_probs": jax.nn.logsumexp(log_attention[..., None] + log_spatial, axis=(1, 2)),  # class 0
        "gap_logits": jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]),  # classes 0, 1, 0
        "cam": cam,
    }
    labels = jnp.array([0, 0, 0])
    mask = jnp.array([True, True, False])
    sums = jax.jit(loc.box_scores, static_argnums=4)(outputs, labels, boxes, mask, (8, 8))
    # Pointing: attention right on example 0 only; the flat CAM of example 1 points at cell
    # (0, 0), outside its box.
    assert float(sums["loc_attention_pointing"]) == 1.0
    assert float(sums["loc_cam_pointing"]) == 1.0
    # Mass ratio of the attention: example 0, (0.7 - 0.1) / 0.6 = all mass in a quarter -> 4;
    # example 1, nothing in the bottom row -> 0.
    assert float(sums["loc_attention_mass_ratio"]) == pytest.approx(4.0, rel=1e-5)
    # The spatial map is flat: ratio 1 for each counted example.
    assert float(sums["loc_spatial_mass_ratio"]) == pytest.approx(2.0, rel=1e-5)

    fetched = loc.iou_sums(jax.device_get(sums))
    assert loc.PER_EXAMPLE not in fetched
    # Example 0: the attention's thresholded box is the top-left cell's pixels and more
    # (bilinear spread), never the whole image; example 1: the box lands in the top row.
    iou_0 = loc.box_iou(loc.threshold_box(np.asarray(sums[loc.PER_EXAMPLE]["heatmap/attention"][0]), 0.2),
                        np.asarray(boxes[0]))
    iou_1 = loc.box_iou(loc.threshold_box(np.asarray(sums[loc.PER_EXAMPLE]["heatmap/attention"][1]), 0.2),
                        np.asarray(boxes[1]))
    assert fetched["loc_attention_iou"] == pytest.approx(iou_0 + iou_1)
    assert fetched["loc_attention_gt_known"] == float(iou_0 >= 0.5) + float(iou_1 >= 0.5)
    # The flat spatial map's box is the whole image: IoU 1/4 and 1/2, GT-known once (example 1).
    assert fetched["loc_spatial_iou"] == pytest.approx(0.75)
    assert fetched["loc_spatial_gt_known"] == 1.0 and fetched["loc_spatial_top1_loc"] == 1.0
    # The flat CAM of example 1 also gives the whole image, but GAP-FC predicts class 1 there:
    # GT-known without top-1 localisation.
    assert fetched["loc_cam_gt_known"] >= 1.0
    assert fetched["loc_cam_top1_loc"] == fetched["loc_cam_gt_known"] - 1.0


def test_iou_sums_pass_through_without_boxes():
    assert loc.iou_sums({"count": 3.0}) == {"count": 3.0}


# ----------------------------------------------------------------- MaxBoxAccV2 (threshold sweep)


def test_sweep_finds_the_threshold_that_outlines_the_box():
    # A 16x16 heatmap: 1.0 in the true box (top-left 8x8), 0.6 in a ring around it, 0.3 elsewhere.
    heat = np.full((16, 16), 0.3)
    heat[:12, :12] = 0.6
    heat[:8, :8] = 1.0
    gt = np.array([0.0, 0.0, 0.5, 0.5])
    thresholds = (0.0, 0.5, 0.9)
    ious = loc.sweep_ious(heat, gt, thresholds)
    # t=0: whole image (IoU 64/256); t=0.5: the 12x12 block (64/144); t=0.9: the box itself.
    np.testing.assert_allclose(ious, [0.25, 64 / 144, 1.0])
    hits = loc.box_hits(ious[None], (0.3, 0.5, 0.7))
    np.testing.assert_array_equal(hits, [[0, 1, 1], [0, 0, 1], [0, 0, 1]])


def test_max_box_accuracy_takes_each_levels_best_threshold():
    accuracy = np.array([[0.2, 0.9, 0.5], [0.1, 0.4, 0.6], [0.0, 0.1, 0.3]])
    best, v2 = loc.max_box_accuracy(accuracy)
    np.testing.assert_allclose(best, [0.9, 0.6, 0.3])
    assert v2 == pytest.approx(0.6)
    chosen = loc.operating_thresholds(accuracy, (0.1, 0.2, 0.3))
    np.testing.assert_allclose(chosen, [0.2, 0.3, 0.3])
    # The thresholds chosen on one split are applied to another, whatever that split's best is.
    other = np.array([[0.8, 0.1, 0.2], [0.9, 0.2, 0.3], [0.7, 0.0, 0.1]])
    np.testing.assert_allclose(loc.accuracy_at(other, chosen, (0.1, 0.2, 0.3)), [0.1, 0.3, 0.1])
