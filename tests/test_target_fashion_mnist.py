"""The target Fashion-MNIST builder (the class decides the location) on synthetic items and fake idx files."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import tensorflow_datasets as tfds
from test_cluttered_fashion_mnist import write_source

from saol_jax.data import prepare
from saol_jax.data import target_fashion_mnist as tfm

ITEM_LEVEL = 200  # synthetic items: a solid rectangle of this brightness
SIZES = {"train": 8, "validation": 4, "test": 4}


def synthetic_items(num: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`num` 28x28 items, label = index % 10: a solid rectangle whose shape varies with the item."""
    rng = np.random.default_rng(seed)
    items = np.zeros((num, 28, 28), np.uint8)
    for item in items:
        height, width = rng.integers(12, 28, size=2)
        top, left = rng.integers(0, 28 - height + 1), rng.integers(0, 28 - width + 1)
        item[top:top + height, left:left + width] = ITEM_LEVEL
    return items, np.arange(num) % 10


def pixel_box(box) -> tuple[int, int, int, int]:
    return tuple(int(round(v * tfm.CANVAS)) for v in (box.ymin, box.xmin, box.ymax, box.xmax))


@pytest.fixture(scope="module")
def generated() -> list[dict]:
    items, labels = synthetic_items(400, 0)
    return list(tfm.generate("test", items, labels, 150, seed=0))


def test_target_box_and_class_agree(generated):
    for example in generated:
        layer = example["target_layer"]
        assert example["bbox"] == example["item_bbox"][layer]
        assert tfm.TARGET_CLASSES[example["label"]] == example["item_class"][layer]
        # The box bounds a pasted item: its longer side is a drawn side, its inside is bright
        # wherever no later item is pasted over it.
        y0, x0, y1, x1 = pixel_box(example["bbox"])
        assert tfm.ITEM_SIDES[0] <= max(y1 - y0, x1 - x0) <= tfm.ITEM_SIDES[1]
        visible = np.ones((y1 - y0, x1 - x0), bool)
        for box in example["item_bbox"][layer + 1:]:
            a, b, c, d = pixel_box(box)
            visible[max(a - y0, 0):max(c - y0, 0), max(b - x0, 0):max(d - x0, 0)] = False
        inside = example["image"][y0:y1, x0:x1, 0].astype(float)[visible]
        assert np.median(inside) > ITEM_LEVEL * tfm.ITEM_GAIN[0] - 3 * tfm.NOISE_STD


def test_distractor_classes_never_equal_the_label(generated):
    counts = set()
    for example in generated:
        distractors = [c for i, c in enumerate(example["item_class"]) if i != example["target_layer"]]
        assert set(distractors) <= set(tfm.DISTRACTOR_CLASSES)
        assert tfm.TARGET_CLASSES[example["label"]] not in distractors
        counts.add(len(distractors))
    assert counts == set(range(tfm.DISTRACTORS[0], tfm.DISTRACTORS[1] + 1))
    # Every target class is a label, and the target sits in every layer.
    assert {e["label"] for e in generated} == set(range(len(tfm.TARGET_CLASSES)))
    assert {e["target_layer"] for e in generated} == set(range(tfm.DISTRACTORS[1] + 1))


def test_no_box_is_covered_beyond_the_bound(generated):
    for example in generated:
        covered = tfm.covered_fractions([pixel_box(b) for b in example["item_bbox"]])
        assert covered.max() <= tfm.MAX_COVERED + 1e-9


def _item_statistics(generated: list[dict]) -> dict[str, dict[str, list[float]]]:
    """Per role (target, distractor): longer side, area, centre row and column, and brightness
    (the 90th percentile of the pixels of each item's box that no later item covers)."""
    stats = {role: {k: [] for k in ("side", "area", "cy", "cx", "bright")} for role in ("target", "distractor")}
    for example in generated:
        boxes = [pixel_box(b) for b in example["item_bbox"]]
        for layer, (y0, x0, y1, x1) in enumerate(boxes):
            role = stats["target" if layer == example["target_layer"] else "distractor"]
            visible = np.zeros((tfm.CANVAS, tfm.CANVAS), bool)
            visible[y0:y1, x0:x1] = True
            for a, b, c, d in boxes[layer + 1:]:
                visible[a:c, b:d] = False
            role["side"].append(max(y1 - y0, x1 - x0))
            role["area"].append((y1 - y0) * (x1 - x0))
            role["cy"].append((y0 + y1) / 2)
            role["cx"].append((x0 + x1) / 2)
            role["bright"].append(np.percentile(example["image"][..., 0][visible], 90))
    return stats


def test_targets_and_distractors_share_size_brightness_and_position(generated):
    stats = _item_statistics(generated)
    for key in stats["target"]:
        p = scipy.stats.ks_2samp(stats["target"][key], stats["distractor"][key]).pvalue
        assert p > 0.001, f"{key}: targets and distractors differ (KS p={p:.2g})"
    # The check has power: the brightness of targets differs from that of undimmed items.
    assert np.mean(stats["target"]["bright"]) < ITEM_LEVEL - tfm.NOISE_STD


def test_pools_are_disjoint_and_fixed():
    train, validation = tfm.split_pool("train", 60_000, 0), tfm.split_pool("validation", 60_000, 0)
    assert len(validation) == 12_000 and len(train) == 48_000
    assert not np.intersect1d(train, validation).size
    np.testing.assert_array_equal(validation, tfm.split_pool("validation", 60_000, 0))
    assert tfm.source_split("test") == "test" and tfm.source_split("validation") == "train"


def test_generation_is_deterministic():
    items, labels = synthetic_items(100, 1)
    first = list(tfm.generate("test", items, labels, 5, seed=3))
    again = list(tfm.generate("test", items, labels, 5, seed=3))
    other = list(tfm.generate("test", items, labels, 5, seed=4))
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a["image"], b["image"])
        assert a["item_bbox"] == b["item_bbox"]
    assert not all(np.array_equal(a["image"], b["image"]) for a, b in zip(first, other))


def test_too_many_examples_or_items_is_an_error(monkeypatch):
    items, labels = synthetic_items(20, 0)  # 10 target items
    with pytest.raises(ValueError, match="asked for 11 examples, its pool has 10 target items"):
        list(tfm.generate("test", items, labels, 11, seed=0))
    monkeypatch.setattr(tfm, "ITEM_SIDES", (60, 64))
    monkeypatch.setattr(tfm, "CANVAS_TRIES", 3)
    with pytest.raises(ValueError, match="do not fit"):
        list(tfm.generate("test", items, labels, 1, seed=0))


@pytest.fixture(scope="module")
def source_dir(tmp_path_factory) -> str:
    return write_source(tmp_path_factory.mktemp("fashion_idx_target"), synthetic_items, {"train": 60, "test": 20})


def test_builder_writes_three_splits(tmp_path, source_dir):
    root = tfm.TargetFashionMNIST.prepare(str(tmp_path), source_dir=source_dir, sizes=SIZES)
    builder = tfds.builder(tfm.NAME, data_dir=root)
    assert {s: builder.info.splits[s].num_examples for s in SIZES} == SIZES
    assert builder.info.supervised_keys == ("image", "label")
    assert builder.info.features["label"].num_classes == len(tfm.TARGET_CLASSES)
    data = tfds.as_numpy(builder.as_dataset(split="validation", shuffle_files=False))
    for example in data:
        assert example["image"].shape == (tfm.CANVAS, tfm.CANVAS, 1)
        np.testing.assert_array_equal(example["bbox"], example["item_bbox"][example["target_layer"]])
        assert tfm.TARGET_CLASSES[example["label"]] == example["item_class"][example["target_layer"]]


def test_prepare_cli_writes_the_target_benchmark(tmp_path, source_dir, capsys):
    args = ["--data_dir", str(tmp_path), "--source_dir", source_dir, "--cluttered_train", "2",
            "--cluttered_test", "2", "--target_train", "3", "--target_validation", "2", "--target_test", "2"]
    assert prepare.main(args) == 0
    assert "target_fashion_mnist ready" in capsys.readouterr().out
    builder = tfds.builder(tfm.NAME, data_dir=str(tmp_path))
    assert builder.info.splits["validation"].num_examples == 2


def test_prepare_cli_names_too_large_a_split(tmp_path, source_dir, capsys):
    args = ["--data_dir", str(tmp_path), "--source_dir", source_dir, "--cluttered_train", "2",
            "--cluttered_test", "2", "--target_train", "3", "--target_validation", "2", "--target_test", "11"]
    assert prepare.main(args) == 1
    assert "error: test: asked for 11 examples" in capsys.readouterr().err
