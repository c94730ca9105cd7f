"""The class-agnostic baselines on hand-made images with known answers, and the command."""

from __future__ import annotations

import json

import numpy as np
import pytest
from commands import run_command

from saol_jax.core.localisation import IOU_LEVELS
from saol_jax.studies import baselines as bl


def one_bright_item(top: int, left: int, side: int, size: int = 32) -> np.ndarray:
    """uint8 [size, size]: dim noise with one bright square and one dim, smaller square elsewhere."""
    rng = np.random.default_rng(top * 100 + left)
    image = rng.integers(0, 40, size=(size, size)).astype(np.uint8)
    image[top:top + side, left:left + side] = 230
    image[(top + side + 2) % size:(top + side + 2) % size + 3, 0:3] = 120  # dim clutter, 3x3
    return image


def test_raw_image_box_finds_the_one_bright_item():
    image = one_bright_item(5, 9, 12).astype(np.float32) / 255
    np.testing.assert_allclose(bl.raw_image_box(image, 0.6), [5 / 32, 9 / 32, 17 / 32, 21 / 32])
    # A 3x3 opening removes specks: a lone bright pixel is not an item.
    speck = np.zeros((8, 8), np.float32)
    speck[2, 2] = 1.0
    np.testing.assert_array_equal(bl.raw_image_box(speck, 0.5), [0, 0, 1, 1])


def test_raw_image_sweep_scores_one_on_items_that_are_the_brightest():
    images = np.stack([one_bright_item(t, l, 10) for t, l in ((2, 3), (15, 18), (8, 20))])
    boxes = np.array([[t / 32, l / 32, (t + 10) / 32, (l + 10) / 32] for t, l in ((2, 3), (15, 18), (8, 20))])
    ious = bl.raw_image_ious(images, boxes)
    report = bl.sweep_report(ious, ious)
    assert report["max_box_acc"] == {f"{level:g}": 1.0 for level in IOU_LEVELS}
    assert report["box_acc_v2_at_tuned"] == 1.0
    assert all(t <= 230 / 255 for t in report["tuned_thresholds"].values())
    # Above the item's level nothing survives: the whole-image box misses.
    assert (ious[:, -1] < 0.3).all()


def test_tuned_thresholds_come_from_the_tuning_split():
    ious = np.zeros((2, 3))
    ious[:, 2] = 1.0  # right only at the last threshold
    tune = np.zeros((2, 3))
    tune[:, 0] = 1.0  # the tuning split prefers the first
    report = bl.sweep_report(ious, tune, thresholds=(0.1, 0.2, 0.3))
    assert report["max_box_acc"]["0.5"] == 1.0
    assert report["box_acc_at_tuned"]["0.5"] == 0.0
    assert report["tuned_thresholds"]["0.5"] == 0.1


def test_intensity_maps_are_cell_means():
    images = np.arange(16, dtype=np.uint8).reshape(1, 4, 4)
    np.testing.assert_allclose(bl.intensity_maps(images, 2)[0], [[2.5, 4.5], [10.5, 12.5]])
    with pytest.raises(ValueError, match="do not split into a 3x3 grid"):
        bl.intensity_maps(images, 3)


def test_centred_box_and_random_item():
    np.testing.assert_allclose(bl.centred_box(0.5, 0.25), [0.25, 0.375, 0.75, 0.625])
    target = np.array([0.0, 0.0, 0.5, 0.5])
    items = [np.array([target, [0.5, 0.5, 1.0, 1.0]]),  # one of two: 1/2 at every level
             np.array([[0.5, 0.0, 1.0, 0.5], target, [0.0, 0.5, 0.5, 1.0], [0.0, 0.0, 0.5, 0.4]])]
    # The second image: the target (IoU 1) and a box of IoU 0.8 among four.
    expected = [(0.5 + 2 / 4) / 2, (0.5 + 2 / 4) / 2, (0.5 + 2 / 4) / 2]
    np.testing.assert_allclose(bl.random_item_accuracy(items, np.stack([target, target])), expected)
    np.testing.assert_allclose(bl.random_item_accuracy(items[1:], target[None], iou_levels=(0.9,)), [0.25])


def test_command_on_a_tiny_dataset(tiny_boxed_dataset, tmp_path):
    out = tmp_path / "baselines.json"
    args = ["--dataset", tiny_boxed_dataset["name"], "--data_dir", tiny_boxed_dataset["data_dir"],
            "--split", "test", "--tune_split", "train", "--grid", "4", "--out", str(out)]
    result = run_command("studies.baselines", args, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["count"] == 30 and report["chance_top1"] == 0.25
    # Each image holds one bright square over dim noise: the raw image finds every box at its
    # best threshold, and nearly every one at the threshold chosen on the train split.
    assert report["raw_image"]["max_box_acc_v2"] == 1.0
    assert report["raw_image"]["box_acc_at_tuned"]["0.5"] >= 0.9
    assert 0.0 <= report["intensity_map"]["pointing"] <= 1.0 and report["intensity_map"]["mass_ratio"] > 1.0
    assert "random_item" not in report  # the tiny dataset has no item boxes

    bad = run_command("studies.baselines", [*args[:4], "--split", "nope"], timeout=300)
    assert bad.returncode != 0
    assert bad.stderr.strip().splitlines()[-1].startswith("error: tiny_boxed_shapes has no split 'nope'")
