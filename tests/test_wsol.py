"""WSOL evaluator on a synthetic box dataset (the scores themselves: tests/test_localisation.py)."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds

from commands import run_command
from configs import fashion_mnist
from saol_jax.commands import wsol
from saol_jax.core import localisation
from saol_jax.core.trainer import train_and_evaluate

SIZE = 16
NUM_TEST = 20


def test_bad_settings_fail_before_loading_anything(tmp_path):
    with pytest.raises(ValueError, match="component"):
        wsol.score_wsol(str(tmp_path), component="convex")


def hand_made_sums(count: int, best: int, correct: int) -> dict:
    """Sums of a split of `count` images whose box accuracy peaks at threshold index `best` at every
    IoU level (all images located there, half as many one step away, none elsewhere), of which the
    first `correct` are classified right."""
    num = len(localisation.SWEEP_THRESHOLDS)
    ious = np.zeros((count, num))
    ious[:, best] = 0.8
    ious[: count // 2, best + 1] = 0.6
    return {"count": float(count), "correct": float(correct), "pointing": count / 4, "mass_ratio": 1.5 * count,
            **localisation.sweep_sums(ious, np.arange(count) < correct)}


def test_thresholds_are_chosen_on_the_tuning_split_and_applied_to_the_scored_one():
    # The tuning split is best at threshold 0.10, the scored split at 0.40: the headline scores the
    # scored split at 0.10 (nothing located there), its own best is only the oracle.
    results = wsol.report(hand_made_sums(8, best=10, correct=8), hand_made_sums(10, best=40, correct=6))
    for level in ("30", "50", "70"):
        assert results[f"threshold_{level}"] == 0.10 and results[f"maxboxacc_{level}"] == 0.0
        assert results["oracle"][f"threshold_{level}"] == 0.40 and results["oracle"][f"maxboxacc_{level}"] == 1.0
    assert results["maxboxacc_v2"] == 0.0 and results["gt_known_loc"] == 0.0 and results["top1_loc"] == 0.0
    assert results["oracle"]["maxboxacc_v2"] == 1.0 and results["oracle"]["top1_loc"] == 0.6
    assert results["oracle"]["mean_iou"] == pytest.approx(0.8)
    assert results["count"] == 10 and results["threshold_count"] == 8 and results["top1_cls"] == 0.6
    assert results["pointing"] == 0.25 and results["mass_ratio"] == 1.5
    # One step higher on the tuning split: the IoU-0.5 and 0.3 levels locate half the scored images
    # at 0.41 (IoU 0.6), the 0.7 level none; top-1 counts those of them classified right.
    results = wsol.report(hand_made_sums(8, best=41, correct=8), hand_made_sums(10, best=40, correct=6))
    assert results["threshold_50"] == 0.41
    assert results["maxboxacc_30"] == 0.5 and results["maxboxacc_50"] == 0.5 and results["maxboxacc_70"] == 0.0
    assert results["maxboxacc_v2"] == pytest.approx(1 / 3) and results["top1_loc"] == 0.5
    assert results["mean_iou"] == pytest.approx(0.3)


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
        scores = {name[len(f"eval/loc_{kind}_"):]: v for name, v in final.items() if name.startswith(f"eval/loc_{kind}_")}
        for metric in ("pointing", "maxboxacc_v2", "maxboxacc_30", "maxboxacc_50", "maxboxacc_70", "top1_loc", "iou"):
            assert 0.0 <= scores[metric] <= 1.0, (kind, metric)
        for level in ("30", "50", "70"):
            assert scores[f"threshold_{level}"] in localisation.SWEEP_THRESHOLDS
        assert scores["maxboxacc_30"] >= scores["maxboxacc_50"] >= scores["maxboxacc_70"]
        assert scores["top1_loc"] <= scores["maxboxacc_50"]
        assert scores["mass_ratio"] >= 0.0


def test_offline_evaluator_agrees_with_the_training_evaluation(workdir):
    # The trainer scores the test split at the thresholds its validation split chose; wsol's default
    # threshold split is that split, so both report the same figures.
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        final = [json.loads(line) for line in f if '"eval"' in line][-1]
    results = wsol.score_wsol(workdir, kind="spatial", batch_size=8)
    assert results["split"] == "test" and results["threshold_split"] == "train[90%:]"
    assert results["count"] == NUM_TEST and 0 < results["threshold_count"] < 64
    for name in ("maxboxacc_v2", "maxboxacc_50", "threshold_50", "top1_loc"):
        assert results[name] == pytest.approx(final[f"eval/loc_spatial_{name}"]), name
    assert results["pointing"] == pytest.approx(final["eval/loc_spatial_pointing"])
    assert results["mass_ratio"] == pytest.approx(final["eval/loc_spatial_mass_ratio"], rel=1e-4)
    # The thresholds chosen on another split can only do as well as the split's own best.
    assert results["maxboxacc_v2"] <= results["oracle"]["maxboxacc_v2"]
    assert results["gt_known_loc"] == results["maxboxacc_50"] <= results["oracle"]["maxboxacc_50"]
    assert results["top1_loc"] <= min(results["gt_known_loc"], results["top1_cls"])
    # Another held-out split, named: its own thresholds.
    named = wsol.score_wsol(workdir, kind="spatial", threshold_split="train", batch_size=8)
    assert named["threshold_split"] == "train" and named["threshold_count"] == 64
    assert named["oracle"] == results["oracle"]


def test_product_map_of_a_saol_model(workdir):
    results = wsol.score_wsol(workdir, kind="product", threshold_split="train", batch_size=8, max_examples=8)
    assert results["map"] == "product" and results["count"] == 8 and results["threshold_count"] == 8
    assert 0.0 <= results["pointing"] <= 1.0 and results["mass_ratio"] >= 0.0


def test_a_threshold_split_is_needed_and_must_be_held_out(workdir, tmp_path):
    # A run without a validation split (its config.json without the field's value).
    no_validation = str(tmp_path / "run")
    shutil.copytree(workdir, no_validation)
    with open(os.path.join(no_validation, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    config["dataset"]["validation_split"] = None
    with open(os.path.join(no_validation, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f)
    with pytest.raises(wsol.ThresholdSplitError, match="validation_split"):
        wsol.score_wsol(no_validation, max_examples=2)
    with pytest.raises(wsol.ThresholdSplitError, match="held-out"):
        wsol.score_wsol(workdir, split="test", threshold_split="test", max_examples=2)
    # Another dataset than the run's: the run's validation split says nothing about it.
    with pytest.raises(wsol.ThresholdSplitError, match="is not the run's dataset"):
        wsol.score_wsol(workdir, dataset="caltech_birds2011", max_examples=2)
    proc = run_command("commands.wsol", ["--workdir", no_validation, "--max_examples", "2"], timeout=300)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith("error: no split to choose the box thresholds on")


def test_cli_writes_json_and_cam_works(workdir):
    out = os.path.join(workdir, "wsol_cam.json")
    proc = run_command("commands.wsol", ["--workdir", workdir, "--map", "cam", "--head", "gap", "--max_examples", "5",
                                "--threshold_split", "train[:10]", "--batch_size", "4", "--out", out], timeout=300)
    assert proc.returncode == 0, proc.stderr[-5000:]
    printed, wrote = proc.stdout.rsplit("wrote ", 1)
    assert wrote.strip() == out
    results = json.loads(printed)
    with open(out, encoding="utf-8") as f:
        assert json.load(f) == results
    assert results["count"] == 5 and results["map"] == "cam" and results["head"] == "gap"
    assert results["threshold_split"] == "train[:10]" and results["threshold_count"] == 5
    for key in ("maxboxacc_v2", "top1_loc", "gt_known_loc", "top1_cls", "mean_iou", "pointing"):
        assert 0.0 <= results[key] <= 1.0
    for key in ("maxboxacc_v2", "top1_loc", "mean_iou"):
        assert 0.0 <= results["oracle"][key] <= 1.0
    assert results["top1_loc"] <= min(results["gt_known_loc"], results["top1_cls"])
