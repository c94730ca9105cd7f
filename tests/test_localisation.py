"""True-box localisation scores on hand-made maps whose answers are worked out by hand."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from saol_jax.core import localisation as loc

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


def test_cell_maps_pick_the_given_class():
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
    # The attention: the sweep's sums are those of the reference box rule at every threshold.
    heat = np.asarray(sums[loc.PER_EXAMPLE]["heatmap/attention"])
    ious = np.array([[loc.box_iou(loc.threshold_box(heat[b], t), np.asarray(boxes[b])) for t in loc.SWEEP_THRESHOLDS]
                     for b in (0, 1)])
    np.testing.assert_allclose(fetched["loc_attention_sweep_iou"], ious.sum(axis=0))
    np.testing.assert_array_equal(fetched["loc_attention_sweep_hits"], loc.box_hits(ious))
    # The flat spatial map's box is the whole image at every threshold: IoU 1/4 and 1/2, so one
    # hit at IoU 0.3 and 0.5 (example 1, whose class SAOL gets right: top-1 too), none at 0.7.
    num = len(loc.SWEEP_THRESHOLDS)
    np.testing.assert_allclose(fetched["loc_spatial_sweep_iou"], np.full(num, 0.75))
    np.testing.assert_array_equal(fetched["loc_spatial_sweep_hits"], [[1] * num, [1] * num, [0] * num])
    np.testing.assert_array_equal(fetched["loc_spatial_sweep_top1"], [1] * num)
    # The flat CAM of example 1 also gives the whole image, but GAP-FC predicts class 1 there:
    # GT-known without top-1 localisation, at every threshold.
    assert fetched["loc_cam_sweep_hits"][1].min() >= 1.0
    np.testing.assert_array_equal(fetched["loc_cam_sweep_top1"], fetched["loc_cam_sweep_hits"][1] - 1.0)


def two_class_outputs(saol_pred: list[int], gap_pred: list[int]) -> dict:
    """Outputs on a 4x4 grid, 2 classes, for len(saol_pred) images: class 0's spatial map and CAM
    fill the top-left 2x2 cells, class 1's the bottom-right ones; SAOL and GAP-FC predict as given."""
    top_left = jnp.zeros((4, 4)).at[:2, :2].set(1.0)
    bottom_right = jnp.zeros((4, 4)).at[2:, 2:].set(1.0)
    num = len(saol_pred)
    spatial0 = jnp.broadcast_to(0.1 + 0.8 * top_left, (num, 4, 4))
    return {
        "log_attention": jnp.log(jnp.broadcast_to((0.1 + top_left) / jnp.sum(0.1 + top_left), (num, 4, 4))),
        "log_spatial": jnp.log(jnp.stack([spatial0, 1.0 - spatial0], -1)),
        "log_probs": jnp.log(jax.nn.one_hot(jnp.array(saol_pred), 2) * 0.8 + 0.1),
        "gap_logits": jax.nn.one_hot(jnp.array(gap_pred), 2),
        "cam": jnp.broadcast_to(jnp.stack([top_left, bottom_right], -1), (num, 4, 4, 2)),
    }


def test_class_maps_take_the_true_class_and_top1_the_prediction():
    # Both images are of class 0 with the box on the top-left quadrant; image 0 is predicted as
    # class 1 (whose maps point at the bottom right), image 1 as class 0.
    outputs = two_class_outputs(saol_pred=[1, 0], gap_pred=[1, 0])
    boxes = jnp.array([[0.0, 0.0, 0.5, 0.5]] * 2)
    scores = jax.jit(loc.box_scores, static_argnums=4)
    sums = jax.device_get(scores(outputs, jnp.array([0, 0]), boxes, jnp.array([True, True]), (16, 16)))
    true_map = np.asarray(loc.upsample_normalised(loc.cell_maps(outputs, "spatial", jnp.array([0, 0])), (16, 16)))
    for kind in ("spatial", "product", "cam"):
        # The true class's map points into the box for both images and puts all its mass there.
        assert float(sums[f"loc_{kind}_pointing"]) == 2.0, kind
        assert float(sums[f"loc_{kind}_mass_ratio"]) == pytest.approx(8.0, rel=1e-5), kind
    np.testing.assert_allclose(sums[loc.PER_EXAMPLE]["heatmap/spatial"], true_map, atol=1e-6)
    fetched = loc.iou_sums(sums)
    for kind in ("attention", "spatial", "product", "cam"):
        hits, top1 = fetched[f"loc_{kind}_sweep_hits"], fetched[f"loc_{kind}_sweep_top1"]
        # GT-known: both images located at the good thresholds; top-1: only image 1 (right class).
        assert hits[1].max() == 2.0, kind
        np.testing.assert_array_equal(top1, hits[1] / 2, err_msg=kind)
        figures = loc.sweep_figures({k: fetched[f"loc_{kind}_{k}"] for k in loc.SWEEP_SUMS}, 2.0)
        assert figures["maxboxacc_50"] == 1.0 and figures["top1_loc"] == 0.5, kind


def test_sweep_sums_of_two_batches_add_up_to_those_of_one():
    from saol_jax.core import evaluation

    rng = np.random.default_rng(0)
    num = 6
    outputs = {
        "log_attention": jax.nn.log_softmax(jnp.asarray(rng.normal(size=(num, 16)), jnp.float32)).reshape(num, 4, 4),
        "log_spatial": jax.nn.log_softmax(jnp.asarray(rng.normal(size=(num, 4, 4, 3)), jnp.float32)),
        "log_probs": jax.nn.log_softmax(jnp.asarray(rng.normal(size=(num, 3)), jnp.float32)),
        "gap_logits": jnp.asarray(rng.normal(size=(num, 3)), jnp.float32),
        "cam": jnp.asarray(rng.normal(size=(num, 4, 4, 3)), jnp.float32),
    }
    corner = rng.uniform(0.0, 0.5, size=(num, 2))
    boxes = jnp.asarray(np.concatenate([corner, corner + rng.uniform(0.2, 0.5, size=(num, 2))], 1), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 3, num))
    mask = jnp.array([True] * 5 + [False])  # the last image is padding

    scores = jax.jit(loc.box_scores, static_argnums=4)

    def host_sums(rows: list[int], counted: list[bool]) -> dict:
        # A batch of the images `rows` (repeats as padding, as the eval batches pad) with its own mask.
        sliced = {k: v[jnp.array(rows)] for k, v in outputs.items()}
        batch = (labels[jnp.array(rows)], boxes[jnp.array(rows)], jnp.array(counted))
        return loc.iou_sums(jax.device_get(scores(sliced, *batch, (16, 16))))

    one = evaluation.add_sums({}, host_sums(list(range(num)), list(np.asarray(mask))))
    first = host_sums([0, 1, 2, 0, 0, 0], [True] * 3 + [False] * 3)
    two = evaluation.add_sums(evaluation.add_sums({}, first), host_sums([3, 4, 5, 3, 3, 3], [True] * 2 + [False] * 4))
    assert one.keys() == two.keys() and any(loc.is_sweep_sum(k) for k in one)
    for name in one:
        np.testing.assert_allclose(two[name], one[name], rtol=1e-6, err_msg=name)
    summary = evaluation.metrics_from_sums({**one, "count": 5.0})
    assert summary["eval/loc_attention_maxboxacc_v2"] == pytest.approx(
        loc.max_box_accuracy(one["loc_attention_sweep_hits"] / 5.0)[1])


def test_summary_at_thresholds_chosen_on_another_split():
    from saol_jax.core import evaluation

    # Two thresholds: this split is best at 0.0 for every level, the other at 0.01.
    hits = np.array([[4.0, 2.0], [3.0, 1.0], [2.0, 0.0]])
    totals = {"count": 4.0, "loc_cam_sweep_hits": hits, "loc_cam_sweep_top1": np.array([2.0, 1.0]),
              "loc_cam_sweep_iou": np.array([2.0, 1.0])}
    own = {"eval/loc_cam_threshold_30": 0.0, "eval/loc_cam_threshold_50": 0.0, "eval/loc_cam_threshold_70": 0.0}
    other = {k: 0.01 for k in own} | {"eval/loc_cam_maxboxacc_v2": 0.0}
    at_own = evaluation.metrics_from_sums(totals)
    assert {k: at_own[k] for k in own} == own
    assert at_own["eval/loc_cam_maxboxacc_v2"] == pytest.approx(0.75)
    assert at_own["eval/loc_cam_top1_loc"] == 0.5 and at_own["eval/loc_cam_iou"] == 0.5
    at_other = evaluation.metrics_from_sums(totals, evaluation.chosen_thresholds(other))
    assert at_other["eval/loc_cam_maxboxacc_50"] == 0.25 and at_other["eval/loc_cam_maxboxacc_v2"] == 0.25
    assert at_other["eval/loc_cam_top1_loc"] == 0.25 and at_other["eval/count"] == 4.0


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


def test_sweep_boxes_match_the_box_rule_at_every_threshold():
    # Smooth maps with several peaks, and coarse maps with equal-size components (ties go to the
    # first component in raster order, as in `threshold_box`).
    rng = np.random.default_rng(1)
    smooth = np.asarray(loc.upsample_normalised(jnp.asarray(rng.random((6, 5, 5)) ** 3, jnp.float32), (20, 20)))
    coarse = np.round(rng.random((6, 9, 9)) * 3) / 3
    for heat in [*smooth, *coarse]:
        for component in ("largest", "all"):
            want = [loc.threshold_box(heat, t, component) for t in loc.SWEEP_THRESHOLDS]
            np.testing.assert_array_equal(loc.sweep_boxes(heat, loc.SWEEP_THRESHOLDS, component), want)


def test_sweep_of_a_map_without_pixels_gives_no_box():
    heat = np.full((4, 4), np.nan)
    np.testing.assert_array_equal(loc.sweep_boxes(heat, (0.0, 0.5)), np.zeros((2, 4)))
    np.testing.assert_array_equal(loc.sweep_ious(heat, np.array([0, 0, 1, 1]), (0.0, 0.5)), [0.0, 0.0])
