"""WSOL evaluator on a synthetic box dataset (the scores themselves: tests/test_localization.py)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from commands import run_command
from configs import fashion_mnist
from saol_jax import wsol
from saol_jax.trainer import train_and_evaluate

SIZE = 16
NUM_TEST = 20


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


def test_training_evaluation_reports_true_box_localisation(workdir):
    # The trainer's eval batches carry the dataset's boxes; every map of a SAOL model is scored.
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        final = [json.loads(line) for line in f if '"eval"' in line][-1]
    assert final["eval/count"] == NUM_TEST
    for kind in ("attention", "spatial", "product", "cam"):
        for metric in ("pointing", "iou", "gt_known", "top1_loc"):
            assert 0.0 <= final[f"eval/loc_{kind}_{metric}"] <= 1.0, (kind, metric)
        assert final[f"eval/loc_{kind}_top1_loc"] <= final[f"eval/loc_{kind}_gt_known"]
        assert final[f"eval/loc_{kind}_mass_ratio"] >= 0.0


def test_offline_evaluator_agrees_with_the_training_evaluation(workdir):
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        final = [json.loads(line) for line in f if '"eval"' in line][-1]
    results = wsol.evaluate(workdir, kind="spatial", batch_size=8)
    assert results["gt_known_loc"] == pytest.approx(final["eval/loc_spatial_gt_known"])
    assert results["pointing"] == pytest.approx(final["eval/loc_spatial_pointing"])
    assert results["mass_ratio"] == pytest.approx(final["eval/loc_spatial_mass_ratio"], rel=1e-4)


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
    assert results["mass_ratio"] >= 0.0


def test_product_map_of_a_saol_model(workdir):
    results = wsol.evaluate(workdir, kind="product", batch_size=8, max_examples=8)
    assert results["map"] == "product" and results["count"] == 8
    assert 0.0 <= results["pointing"] <= 1.0 and results["mass_ratio"] >= 0.0


def test_cli_writes_json_and_cam_works(workdir):
    out = os.path.join(workdir, "wsol_cam.json")
    proc = run_command("wsol", ["--workdir", workdir, "--map", "cam", "--head", "gap", "--max_examples", "5",
                                "--batch_size", "4", "--out", out], timeout=300)
    assert proc.returncode == 0, proc.stderr[-5000:]
    printed, wrote = proc.stdout.rsplit("wrote ", 1)
    assert wrote.strip() == out
    results = json.loads(printed)
    with open(out, encoding="utf-8") as f:
        assert json.load(f) == results
    assert results["count"] == 5 and results["map"] == "cam" and results["head"] == "gap"
    for key in ("top1_loc", "gt_known_loc", "top1_cls", "mean_iou", "pointing"):
        assert 0.0 <= results[key] <= 1.0
    assert results["top1_loc"] <= min(results["gt_known_loc"], results["top1_cls"])
