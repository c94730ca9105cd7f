"""WSOL: box / IoU / threshold logic on hand-made maps, and the evaluator on a synthetic box dataset."""

from __future__ import annotations

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import fashion_mnist
from saol_jax import wsol
from saol_jax.trainer import train_and_evaluate

SIZE = 16
NUM_TEST = 20


# ----------------------------------------------------------------- hand-made maps


def test_box_iou_by_hand():
    assert wsol.box_iou(np.array([0, 0, 0.5, 0.5]), np.array([0, 0, 1, 1])) == pytest.approx(0.25)
    assert wsol.box_iou(np.array([0, 0, 0.5, 0.5]), np.array([0.5, 0.5, 1, 1])) == 0.0
    assert wsol.box_iou(np.array([0, 0, 0.5, 1]), np.array([0, 0.5, 0.5, 1])) == pytest.approx(0.5)
    # Several ground-truth boxes: the best one counts.
    gt = np.array([[0.5, 0.5, 1, 1], [0, 0, 0.5, 0.5]])
    assert wsol.box_iou(np.array([0, 0, 0.5, 0.5]), gt) == pytest.approx(1.0)


def test_threshold_box_keeps_the_largest_component_or_all():
    heat = np.zeros((8, 8))
    heat[1:4, 1:3] = 1.0  # 6 pixels: rows 1-3, columns 1-2
    heat[6, 5:7] = 0.5  # 2 pixels
    np.testing.assert_allclose(wsol.threshold_box(heat, 0.4, "largest"), [1 / 8, 1 / 8, 4 / 8, 3 / 8])
    np.testing.assert_allclose(wsol.threshold_box(heat, 0.4, "all"), [1 / 8, 1 / 8, 7 / 8, 7 / 8])
    # Above the threshold only the brighter blob remains.
    np.testing.assert_allclose(wsol.threshold_box(heat, 0.6, "all"), [1 / 8, 1 / 8, 4 / 8, 3 / 8])


def test_largest_component_is_four_connected():
    heat = np.zeros((4, 4))
    heat[0, 0] = heat[1, 1] = heat[2, 2] = 1.0  # diagonal: three components of one pixel
    heat[3, 0:3] = 0.0
    box = wsol.threshold_box(heat, 0.5, "largest")
    assert (box[2] - box[0]) * (box[3] - box[1]) == pytest.approx(1 / 16)


def test_one_hot_cell_upsamples_to_its_own_pixels():
    # A 4x4 grid on an 8x8 image: bilinear upsampling gives the cell's own 2x2 pixels
    # 0.75^2 = 0.5625 of the peak and every other pixel at most 0.75 * 0.25.
    cells = jnp.zeros((1, 4, 4)).at[0, 2, 1].set(1.0)
    heat = np.asarray(wsol.upsample_normalised(cells, (8, 8)))[0]
    assert heat.max() == pytest.approx(1.0) and heat.min() == pytest.approx(0.0)
    np.testing.assert_allclose(wsol.threshold_box(heat, 0.5), [4 / 8, 2 / 8, 6 / 8, 4 / 8])


def test_constant_map_gives_the_whole_image():
    heat = np.asarray(wsol.upsample_normalised(jnp.full((1, 3, 3), 1 / 9), (6, 6)))[0]
    np.testing.assert_array_equal(heat, 1.0)
    np.testing.assert_allclose(wsol.threshold_box(heat, 0.2), [0, 0, 1, 1])


def test_cell_maps_pick_the_predicted_class():
    outputs = {
        "log_attention": jnp.log(jnp.full((2, 2, 2), 0.25)),
        "log_spatial": jnp.log(jnp.stack([jnp.full((2, 2, 2), 0.1), jnp.full((2, 2, 2), 0.9)], -1)),
        "cam": jnp.arange(2 * 2 * 2 * 2, dtype=jnp.float32).reshape(2, 2, 2, 2),
    }
    classes = jnp.array([0, 1])
    np.testing.assert_allclose(wsol.cell_maps(outputs, "attention", classes), 0.25, rtol=1e-6)
    np.testing.assert_allclose(wsol.cell_maps(outputs, "spatial", classes)[0], 0.1, rtol=1e-6)
    np.testing.assert_allclose(wsol.cell_maps(outputs, "spatial", classes)[1], 0.9, rtol=1e-6)
    np.testing.assert_array_equal(wsol.cell_maps(outputs, "cam", classes)[1], [[9, 11], [13, 15]])


def test_bad_settings_fail_before_loading_anything(tmp_path):
    with pytest.raises(ValueError, match="threshold"):
        wsol.evaluate(str(tmp_path), threshold=1.5)


# ----------------------------------------------------------------- synthetic dataset


class TinyBoxes(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """16x16 images with one red (class 0) or green (class 1) rectangle, its box as `bbox`."""

    VERSION = tfds.core.Version("1.0.0")
    name = "tiny_boxes"

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(SIZE, SIZE, 3)),
                "label": tfds.features.ClassLabel(num_classes=2),
                "bbox": tfds.features.BBoxFeature(),
            }),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        return {"train": self._generate_examples(0, 64), "test": self._generate_examples(1, NUM_TEST)}

    def _generate_examples(self, seed: int, num: int):
        rng = np.random.default_rng(seed)
        for index in range(num):
            label = index % 2
            height, width = rng.integers(3, SIZE + 1, size=2)
            top, left = rng.integers(0, SIZE - height + 1), rng.integers(0, SIZE - width + 1)
            image = rng.integers(0, 40, (SIZE, SIZE, 3), dtype=np.uint8)
            image[top:top + height, left:left + width, label] = 255
            box = tfds.features.BBox(top / SIZE, left / SIZE, (top + height) / SIZE, (left + width) / SIZE)
            yield index, {"image": image, "label": label, "bbox": box}


@pytest.fixture(scope="module")
def box_dataset(tmp_path_factory) -> dict:
    data_dir = str(tmp_path_factory.mktemp("tfds_boxes"))
    TinyBoxes(data_dir=data_dir).download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    return {"name": "tiny_boxes", "data_dir": data_dir}


@pytest.fixture(scope="module")
def workdir(box_dataset, tmp_path_factory) -> str:
    config = fashion_mnist.get_config("smoke")
    config.dataset.name = box_dataset["name"]
    config.dataset.data_dir = box_dataset["data_dir"]
    config.num_cpu_devices = 0
    path = str(tmp_path_factory.mktemp("wsol_run"))
    train_and_evaluate(config, path)
    return path


def gt_areas(dataset: dict) -> np.ndarray:
    ds = tfds.builder(dataset["name"], data_dir=dataset["data_dir"]).as_dataset(split="test")
    boxes = np.stack([ex["bbox"] for ex in tfds.as_numpy(ds)])
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def test_whole_image_boxes_score_the_ground_truth_area(workdir, box_dataset):
    # Threshold 0 keeps every pixel: the predicted box is the image, so IoU = GT box area.
    results = wsol.evaluate(workdir, threshold=0.0, component="all", batch_size=8)
    areas = gt_areas(box_dataset)
    assert results["count"] == NUM_TEST
    assert results["mean_iou"] == pytest.approx(areas.mean())
    assert results["gt_known_loc"] == pytest.approx(np.mean(areas >= 0.5))
    assert results["top1_loc"] <= min(results["gt_known_loc"], results["top1_cls"])


def test_cli_writes_json_and_cam_works(workdir):
    out = os.path.join(workdir, "wsol_cam.json")
    results = wsol.main(["--workdir", workdir, "--map", "cam", "--head", "gap", "--max_examples", "5",
                         "--batch_size", "4", "--out", out])
    with open(out, encoding="utf-8") as f:
        assert json.load(f) == results
    assert results["count"] == 5 and results["map"] == "cam" and results["head"] == "gap"
    for key in ("top1_loc", "gt_known_loc", "top1_cls", "mean_iou"):
        assert 0.0 <= results[key] <= 1.0
    assert results["top1_loc"] <= min(results["gt_known_loc"], results["top1_cls"])
