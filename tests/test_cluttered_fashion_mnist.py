"""The cluttered Fashion-MNIST builder on small fake idx files, and its boxes in eval batches."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from saol_jax.data import cluttered_fashion_mnist as cfm
from saol_jax.data import default_dataset_config, eval_batches, prepare
from saol_jax.data.fashion_mnist import SPLIT_FILES

SIZES = {"train": 12, "test": 6}
ITEM_LEVEL = 200  # fake items: a solid square of this brightness


def write_idx(path: str, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def fake_items(num: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`num` 28x28 items: a solid square at a random place, label = index % 10."""
    rng = np.random.default_rng(seed)
    items = np.zeros((num, 28, 28), np.uint8)
    for item in items:
        top, left = rng.integers(0, 8, size=2)
        item[top:top + 20, left:left + 20] = ITEM_LEVEL
    return items, np.arange(num) % 10


def write_source(path, make_items, sizes: dict[str, int]) -> str:
    """Fashion-MNIST's four idx files in `path`, each split's `make_items(sizes[split], seed)` items and labels."""
    for seed, (split, (images_file, labels_file)) in enumerate(SPLIT_FILES.items()):
        items, labels = make_items(sizes[split], seed)
        write_idx(os.path.join(path, images_file), items)
        write_idx(os.path.join(path, labels_file), labels)
    return str(path)


@pytest.fixture(scope="module")
def source_dir(tmp_path_factory) -> str:
    return write_source(tmp_path_factory.mktemp("fashion_idx"), fake_items, {"train": 30, "test": 10})


def build(data_dir: str, source_dir: str, seed: int = 0) -> str:
    return cfm.ClutteredFashionMNIST.prepare(data_dir, source_dir=source_dir, sizes=SIZES, seed=seed)


def examples(root: str, split: str) -> dict[str, np.ndarray]:
    builder = tfds.builder(cfm.NAME, data_dir=root)
    return tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1, shuffle_files=False))


@pytest.fixture(scope="module")
def built(tmp_path_factory, source_dir) -> str:
    return build(str(tmp_path_factory.mktemp("cluttered")), source_dir)


def test_splits_features_and_labels(built, source_dir):
    builder = tfds.builder(cfm.NAME, data_dir=built)
    assert {s: builder.info.splits[s].num_examples for s in SIZES} == SIZES
    assert builder.info.supervised_keys == ("image", "label")
    test = examples(built, "test")
    assert test["image"].shape == (SIZES["test"], cfm.CANVAS, cfm.CANVAS, 1)
    assert test["bbox"].shape == (SIZES["test"], 4)
    # Labels come from the source split: the fake test split has 10 items labelled 0..9, chosen
    # without repetition.
    assert len(set(test["label"].tolist())) == SIZES["test"]


def test_boxes_bound_the_item(built):
    for split in SIZES:
        data = examples(built, split)
        for image, box in zip(data["image"][..., 0], data["bbox"]):
            y0, x0, y1, x1 = np.round(box * cfm.CANVAS).astype(int)
            assert 0 <= y0 < y1 <= cfm.CANVAS and 0 <= x0 < x1 <= cfm.CANVAS
            # The item (a resized 20x20 square of a 28x28 frame) fills its box: side 20-44 px
            # scaled by 20/28, give or take the bilinear edge.
            assert 13 <= y1 - y0 <= 33 and 13 <= x1 - x0 <= 33
            inner = image[y0 + 1:y1 - 1, x0 + 1:x1 - 1].astype(float)
            assert abs(inner.mean() - ITEM_LEVEL) < 10  # noise std 10 averages out
            # Fragments never enter the box: its interior holds only the item and noise.
            assert inner.min() > ITEM_LEVEL - 6 * cfm.NOISE_STD


def test_clutter_lies_outside_the_box():
    rng = np.random.default_rng(0)
    items, _ = fake_items(5, 0)
    image, box = cfm.compose(rng, items, 0)
    outside = np.ones((cfm.CANVAS, cfm.CANVAS), bool)
    outside[box[0]:box[2], box[1]:box[3]] = False
    # Fragments are crops of bright squares, dimmed to at least half: some lie outside the box.
    assert (image[..., 0][outside] > ITEM_LEVEL * cfm.FRAGMENT_GAIN[0] - 4 * cfm.NOISE_STD).sum() > 20


def test_the_same_seed_gives_the_same_data(tmp_path, built, source_dir):
    again = examples(build(str(tmp_path / "again"), source_dir), "train")
    first = examples(built, "train")
    np.testing.assert_array_equal(again["image"], first["image"])
    np.testing.assert_array_equal(again["bbox"], first["bbox"])
    other = examples(build(str(tmp_path / "other"), source_dir, seed=1), "train")
    assert not np.array_equal(other["image"], first["image"])


def test_too_many_examples_is_an_error(tmp_path, source_dir):
    with pytest.raises(ValueError, match="asked for 11 examples"):
        cfm.ClutteredFashionMNIST.prepare(str(tmp_path), source_dir=source_dir, sizes={"test": 11})


def test_eval_batches_carry_the_true_boxes(built):
    config = default_dataset_config()
    config.update({"name": cfm.NAME, "data_dir": built})
    batches = list(eval_batches(config, global_batch_size=4, process_index=0, process_count=1))
    boxes = np.concatenate([b["bbox"] for b in batches])
    mask = np.concatenate([b["mask"] for b in batches])
    assert boxes.dtype == np.float32 and boxes.shape == (8, 4)
    np.testing.assert_allclose(boxes[mask], examples(built, "test")["bbox"])
    np.testing.assert_array_equal(boxes[~mask], 0.0)


def test_prepare_cli_writes_both_datasets(tmp_path, source_dir, capsys):
    args = ["--data_dir", str(tmp_path), "--source_dir", source_dir, "--cluttered_train", "4", "--cluttered_test", "2",
            "--target_train", "2", "--target_validation", "1", "--target_test", "2"]
    assert prepare.main(args) == 0
    out = capsys.readouterr().out
    assert "fashion_mnist ready" in out and "cluttered_fashion_mnist ready" in out
    assert tfds.builder(cfm.NAME, data_dir=str(tmp_path)).info.splits["test"].num_examples == 2
